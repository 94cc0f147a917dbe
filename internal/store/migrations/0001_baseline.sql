-- The framework's tables as they stood before numbered migrations. Every statement
-- adopts a database that already has them (IF NOT EXISTS); later migrations do not.

CREATE TABLE IF NOT EXISTS {{schema}}.offsets (
    projection  text   NOT NULL,
    version     int    NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,             -- the next offset to read
    generation  int    NOT NULL,             -- Kafka group generation of the owner
    member      text   NOT NULL,             -- Kafka group member id of the owner
    consumed    bigint NOT NULL DEFAULT 0,   -- events read and settled, for rates in status
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version, topic, partition));

-- Last applied sequence per aggregate.
CREATE TABLE IF NOT EXISTS {{schema}}.aggregates (
    projection    text   NOT NULL,
    version       int    NOT NULL,
    subject       text   NOT NULL,
    last_sequence bigint NOT NULL,
    last_event_id text   NOT NULL,
    PRIMARY KEY (projection, version, subject));

-- Ids of applied events that carry no sequence.
CREATE TABLE IF NOT EXISTS {{schema}}.event_ids (
    projection text NOT NULL,
    version    int  NOT NULL,
    event_id   text NOT NULL,
    PRIMARY KEY (projection, version, event_id));

CREATE TABLE IF NOT EXISTS {{schema}}.parked (
    id          bigserial PRIMARY KEY,
    projection  text   NOT NULL,
    version     int    NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    "offset"    bigint NOT NULL,
    subject     text   NOT NULL,
    event_id    text   NOT NULL,
    event_type  text   NOT NULL,
    error       text   NOT NULL,
    behind      bigint,                     -- offset of the event it waits behind, if any
    attempts    int    NOT NULL DEFAULT 1,
    state       text   NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'retry', 'skip', 'resolved')),
    parked_at   timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    msg_key     bytea,
    msg_value   bytea,
    msg_headers jsonb,
    UNIQUE (projection, version, topic, partition, "offset"));

CREATE INDEX IF NOT EXISTS parked_open ON {{schema}}.parked (projection, version, topic, partition, state) WHERE state <> 'resolved';

-- When each effect started on each partition: its horizon.
CREATE TABLE IF NOT EXISTS {{schema}}.effect_starts (
    effect       text NOT NULL,
    projection   text NOT NULL,
    version      int  NOT NULL,
    topic        text NOT NULL,
    partition    int  NOT NULL,
    horizon_from timestamptz NOT NULL,         -- events older than this never fire
    started_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (effect, projection, version, topic, partition));

CREATE TABLE IF NOT EXISTS {{schema}}.parked_effects (
    id              bigserial PRIMARY KEY,
    effect          text   NOT NULL,
    projection      text   NOT NULL,
    version         int    NOT NULL,
    topic           text   NOT NULL,
    partition       int    NOT NULL,
    "offset"        bigint NOT NULL,
    event_id        text   NOT NULL,
    event_type      text   NOT NULL,
    idempotency_key text   NOT NULL,
    error           text   NOT NULL,
    attempts        int    NOT NULL,
    state           text   NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'retry', 'resolved')),
    parked_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    msg_key         bytea,
    msg_value       bytea,
    msg_headers     jsonb,
    UNIQUE (effect, projection, version, topic, partition, "offset"));

-- Each projection version's applied migration steps (package readmodel).
CREATE TABLE IF NOT EXISTS {{schema}}.migrations (
    projection text NOT NULL,
    version    int  NOT NULL,
    step       int  NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version, step));

-- Blue/green: the version the stable views point at.
CREATE TABLE IF NOT EXISTS {{schema}}.active_versions (
    projection   text PRIMARY KEY,
    version      int  NOT NULL,
    activated_at timestamptz NOT NULL DEFAULT now());
