-- Nothing dropped without proof (docs/ordering.md): each aggregate remembers its last
-- applied events (per event: the sequence as a uvarint, the id's 64-bit xxhash), the
-- proof of a late copy.
-- IF [NOT] EXISTS: development builds added these columns before migrations existed.
ALTER TABLE {{schema}}.aggregates DROP COLUMN IF EXISTS recent_ids;
ALTER TABLE {{schema}}.aggregates ADD COLUMN IF NOT EXISTS recent bytea NOT NULL DEFAULT '\x';

-- holds: later events of the aggregate wait behind this one. An event whose sequence
-- the aggregate has passed (stale, a conflict) parks without holding.
ALTER TABLE {{schema}}.parked ADD COLUMN IF NOT EXISTS holds boolean NOT NULL DEFAULT true;

-- The horizon an effect's start was counted back with: a runner with another moves it.
ALTER TABLE {{schema}}.effect_starts ADD COLUMN IF NOT EXISTS horizon interval;
