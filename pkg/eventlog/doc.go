// Package eventlog connects package events to Apache Kafka through kafka-go: the
// record mapping, the Publisher, the Client and topic setup. It is the only package
// besides the runtime that imports a Kafka client, so package events stays client-free.
//
// Connections have an owner that closes them. A Publisher and a Client each own a
// kafka-go Transport and close it in Close; a process or a projector.Runner keeps one
// Client for its life. The functions that take brokers open a Client for the call and
// close it before returning.
//
// Partitioning is murmur2 on the key (the event's subject), as the Java clients do,
// so every producer — Go, Java, or any client using the Java default — agrees on where
// an aggregate's events live.
//
// kafka-go has no idempotent producer: when a write is retried after a lost
// acknowledgement, or reported as timed out yet delivered later, the same event can
// sit at two offsets. Consumers deduplicate by event id; the projector does.
package eventlog
