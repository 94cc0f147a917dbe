// Package admin is what an operator does to a projection from outside its running
// instances, with nothing but the database and Kafka: the dead-letter queue (DLQ:
// list parked events and effect runs, ask for a retry or a skip), blue/green
// versions (Versions: list, activate, drop), inspection of every partition from
// what is stored (Inspect, LogStarts), and point-in-time replays into a schema of
// their own (ReplayUntil, UntilOffsets).
//
// It imports package projector (a replay is a bounded Runner; Inspect reports a
// projector.Status) and never the reverse: the runtime needs none of this to run.
// The framework's tables are reached through internal/store. Forgetting and
// snapshot scrubbing are in package forget, which the runtime uses itself.
package admin
