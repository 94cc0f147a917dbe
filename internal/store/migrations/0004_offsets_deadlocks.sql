-- Batches lost to a deadlock (40P01) on each partition, over every instance and
-- restart: a runner adds one as it splits the batch to retry it, and status reports
-- the sum (a runner's own count, projector_deadlocks_total, ends with its process).
ALTER TABLE {{schema}}.offsets ADD COLUMN deadlocks bigint NOT NULL DEFAULT 0;
