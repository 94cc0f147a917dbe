// Package judge holds the decisions on each event of a batch, before and around
// its handler: behind a parked event of its aggregate, undecodable, misrouted (its
// key hashes to another partition, or differs from its subject), a proven
// duplicate, a sequence gap or a stale sequence, an unknown or unhandled type —
// each settled as apply, ignore, skip as a duplicate, or park with a reason
// (Rules.Judge, Verdict). It also keeps each aggregate's mark: its highest applied
// sequence and the window of its last applied events (Aggregate, EncodeWindow),
// the proof that a late copy is a duplicate.
//
// It is pure: no PostgreSQL, no Kafka client, unit-tested on its own.
//
// # The cut
//
// Package projector (the runtime) reads a batch into Entries, loads the marks its
// transaction needs into Marks, asks Rules.Judge about each entry, runs the
// handlers of those to apply, and stores the marks, the parked events and the
// position; it imports this package, never the reverse. Entry is what the runtime's
// apply, parking and retrying of parked events share. docs/ordering.md has the
// whole table of decisions. A change to what an event's sequence, id, key or type
// means for it goes here; a change to how the marks or parked events are stored
// goes to package projector (and internal/store for a column).
package judge
