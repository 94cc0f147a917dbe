// Package offsets stores positions per (projection, version, topic, partition) in
// PostgreSQL, in the read model's own transaction, by compare-and-set.
//
// Not built yet: see issue 4 ("The projector runtime").
package offsets
