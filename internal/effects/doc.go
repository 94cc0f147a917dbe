// Package effects is the effect engine: it runs a projection's effects (package
// sideeffects defines them and their Redis ledger) after the read model commits
// their events.
//
// Effects run after their event's read-model transaction has committed, and never
// pass it, so an email never announces what the read model does not show yet. A
// dispatcher per partition, beside the partition's worker, runs every effect of the
// projection over the batches the worker commits, handed over in process with their
// events already decrypted and decoded (Feed): the log is read once, however many
// effects there are. Where the feed does not reach — a fresh claim whose watermarks
// are behind the read model, or a feed that overflowed while the effects were slower
// than the read model — the dispatcher reads the missing events from the log
// itself, once for all the partition's effects, up to the read model's position.
//
// An effect's position on a partition — its durable watermark — is a fenced row of
// its own (offsets.Key with Effect set), advanced once a batch's runs are done or
// parked. Runs reserve their keys in the ledger a chunk (EffectBatchSize) at a time,
// and each run is marked done as soon as it finishes, in the ledger's pipelined
// flushes; its slot (EffectConcurrency per effect and partition) is given back only
// once Redis holds the mark. So at any moment at most EffectConcurrency runs of an
// effect on a partition have run, or may have, without being marked done: all that a
// crash can run again, with the same keys. Reserved runs that had not started wait,
// after a crash, for their lease to expire, and then run once. A crash before the
// watermark moves re-reads the batch; the ledger (or, if Redis lost its data, one
// more run with the same key) settles it.
//
// # The cut
//
// Package projector (the runtime) builds one Engine per Runner from its Config and
// starts Engine.Run beside each partition's worker, handing it a Feed; it imports
// this package, never the reverse. What the worker and the dispatcher share — a
// fenced position on a partition, its claim, the retry policy, the partition
// reader, opening personal data, the status row — is package internal/lane. The
// operator's side of effects (listing parked runs, asking for a retry) is
// admin.DLQ. A change to how runs are reserved, fired, marked, parked or retried
// goes here; a change to what an effect is, or to the ledger, goes to sideeffects.
package effects
