// Package offsets stores consumer positions per (projection, version, topic,
// partition) in PostgreSQL, in the read model's own transaction, so that the read
// model and the position it reflects are committed together or not at all.
//
// Positions are the next offset to read. Writes are fenced: a worker claims its
// partition when it is assigned (recording the Kafka group generation and member),
// and every later advance is a compare-and-set on the expected offset, generation
// and member. An instance that lost its partition in a rebalance — paused, partitioned
// or slow — cannot advance it: its update matches no row and its transaction rolls
// back, read-model writes included.
package offsets
