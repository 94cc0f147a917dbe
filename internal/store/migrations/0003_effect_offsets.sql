-- An effect's position is a row of its own, not an offsets row whose projection is
-- "NAME/fx/EFFECT": a watermark per (effect, projection, version, topic, partition),
-- claimed and advanced like the read model's offsets (package offsets).
CREATE TABLE {{schema}}.effect_offsets (
    effect      text   NOT NULL,
    projection  text   NOT NULL,
    version     int    NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,             -- the next offset whose effects have not run
    generation  int    NOT NULL,
    member      text   NOT NULL,
    consumed    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (effect, projection, version, topic, partition));

INSERT INTO {{schema}}.effect_offsets (effect, projection, version, topic, partition, next_offset, generation, member, consumed, updated_at)
SELECT split_part(projection, '/fx/', 2), split_part(projection, '/fx/', 1), version, topic, partition,
       next_offset, generation, member, consumed, updated_at
  FROM {{schema}}.offsets WHERE strpos(projection, '/fx/') > 0;

DELETE FROM {{schema}}.offsets WHERE strpos(projection, '/fx/') > 0;
