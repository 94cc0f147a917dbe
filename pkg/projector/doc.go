// Package projector is the runtime that builds a read model from the log and keeps
// it current: Kafka group membership (kafka-go's low-level ConsumerGroup), one
// worker per assigned partition, batches sized by count and time, catch-up from
// offset zero then live, deduplication, parking of poison events, and status.
//
// # Effectively once
//
// A worker reads a batch from its partition and applies every event's writes, the
// aggregates' sequence marks and the partition's next offset in one PostgreSQL
// transaction. After any crash, restart or rebalance the new owner resumes from the
// offset stored in PostgreSQL; Kafka's group offsets are committed only as an
// advisory copy for lag tools. The offset write is fenced (package offsets): a
// member that lost its partition cannot commit, and its transaction rolls back.
//
// # Duplicates
//
// kafka-go producers retry without idempotence, so one event can sit at two offsets.
// An event is skipped as a duplicate only when its id was applied: among its
// aggregate's last 32 applied events, or, without a sequence, ever. Anything else is
// applied or parked with a reason, never dropped: a gap is applied and reported, or
// parks the aggregate (GapPolicy); a sequence at or below the aggregate's with a new
// id is applied and reported, or parks alone where it cannot be proven new; a keyed
// record on a partition its key does not hash to (murmur2) parks, naming the
// expected partition and the producer setting that fixes it. docs/ordering.md has
// the whole table.
//
// # Errors
//
// Transient errors (connection refused, PostgreSQL read-only, out of disk, timeouts,
// serialization failures; see readmodel.IsTransient) are retried with backoff, never
// skipped. Permanent errors — an undecodable event, an unknown type under
// UnknownPark, a handler's error or a statement that fails — park the event with its
// error, topic, partition, offset and attempts, and park every later event of the
// same aggregate behind it, in order, while other aggregates go on. Parked events
// are listed and retried (ListParked, RequestRetry) after a fix; the owning worker
// replays them in order. Nothing is dropped silently.
//
// # Readiness
//
// Readiness is per partition: a partition is live when its lag (log end minus stored
// position) is at most ReadyLag, and an instance is ready when every partition it
// owns is live; Inspect decides the same for every partition from what is stored.
// The total lag is reported, never used.
//
// # Effects
//
// Effects (package sideeffects) run after their events' read-model transaction
// commits, never ahead of it; the engine that runs them is internal/effects. A dispatcher per partition runs every effect over the
// batches the partition's worker commits, handed over in process, already decrypted
// and decoded: the log is read once however many effects there are. The hand-over is
// bounded. While a partition replays history and its effects make progress, the
// worker waits for room (the replay slows to the effects' pace); when they stall — a
// mail server or Redis down, a second without a finished run — or the partition is
// live (readiness must not hang on a mail server), it goes on, and the dispatcher
// later reads what it missed from the log, once for all effects, up to the read
// model's position.
//
// Keys are reserved in the Redis ledger a chunk at a time; each run is marked done
// as it finishes, in pipelined flushes shared with the other runs' marks, and holds
// its slot (EffectConcurrency per effect and partition) until Redis has the mark. A
// crash therefore runs again, with the same keys, at most EffectConcurrency runs per
// effect and partition: those in flight. Each effect's durable watermark advances
// once a batch's runs are done or parked. Status.EffectPartitions shows each
// effect's state, watermark, runs in flight, and what it waits on.
//
// # Forgotten subjects
//
// With Keys, a runner purges every forgotten subject from the read model at start,
// and its SubjectForgotten handler does as each forgetting is read. It also keeps its
// snapshot stores (Config.ScrubStore, and the policy's) free of forgotten subjects'
// data, whoever wrote the snapshots: forget.ScrubSnapshots (package forget) at start, after applying a
// SubjectForgotten, and every ScrubEvery. forget.InSnapshots says what still waits.
//
// # The cut
//
// This package is the runtime, and the public entry point (New, Config,
// Runner.Run, Status): group membership (runner.go), the partition worker
// (worker.go), applying a batch in its transaction (apply.go), retrying and
// skipping parked events (dlq.go), and the hand-over to the effects (effects.go).
// Beside it, each imported by it and never the reverse:
//
//   - internal/judge: the decisions on each event (Entry, Rules.Judge) and each
//     aggregate's window of applied events; pure, tested without PostgreSQL;
//   - internal/parking: the worker's side of the parked table;
//   - internal/deadlock: splitting a batch lost to a deadlock into halves, with
//     the backoff between the tries (deadlock.go keeps the counting and logging);
//   - internal/activation: blue/green activation when every partition is live
//     (Config.ActivateWhenLive);
//   - internal/stopat: the end of a bounded run (Config.StopAt);
//   - internal/snapshotting: the snapshot policy (SnapshotPolicy is its Policy)
//     and the scrubber that keeps snapshot stores free of forgotten data;
//   - internal/lane: what a worker and an effect dispatcher share — a fenced
//     position on a partition, its claim, the retry policy (internal/retry), the
//     partition reader, opening personal data — and the status board (Status is
//     its Status; a partition's row per batch, the catch-up progress log),
//     waiting for the topic, the advisory offset commits;
//   - internal/metrics: the Prometheus collectors;
//   - internal/effects: the effect engine, which this package starts per partition;
//   - internal/store: the framework's tables, their migrations and every query on them;
//   - package forget: purging forgotten subjects and scrubbing snapshots;
//   - package admin: what operators do from outside (DLQ, versions, inspection,
//     point-in-time replays); it imports this package, never the reverse.
package projector
