// Package sideeffects declares effects — an email, a webhook, a payment — apart from
// read-model handlers, and makes them fire once however often their events are
// replayed, redelivered or rebuilt.
//
// Each run of an effect gets an idempotency key, a stable hash of the effect's name
// and the event's id, to hand to the downstream system (an SMTP Message-ID, an
// Idempotency-Key header). Three layers keep an effect from firing twice:
//
//  1. The Redis ledger (Ledger): before running, the key is reserved with
//     SET key token NX PX lease; after success it is marked done by compare-and-set
//     on the token, kept for the retention. A holder whose lease expired cannot mark
//     it. The ledger is shared by every instance, projection version and service
//     that names the same effect under the same namespace. Keys are reserved a
//     batch at a time, in one round trip; each run is marked done as it finishes
//     (MarkDone), in a pipelined flush shared with every mark that arrives
//     meanwhile, so that after a crash only the runs that were in flight are
//     unmarked.
//  2. The durable watermark: per effect and partition, a fenced position in
//     PostgreSQL (package offsets), advanced only after the batch's effects are done
//     or parked. Events below it are never read for the effect again, even if Redis
//     lost its data.
//  3. The horizon: an effect that starts with no watermark fires only for events
//     newer than the horizon (default: the ledger's retention); older ones are
//     counted as suppressed, so a new service replaying years of history sends
//     nothing old.
//
// A crash after an effect succeeded but before its key was marked done means one
// more run, with the same key: downstream systems that honour the key (a mail
// server deduplicating Message-IDs, an API honouring Idempotency-Key) see it once.
package sideeffects
