// Package forget keeps the promise of a forgotten subject (package shred) in what
// the framework stores besides the log: Purge applies a projection's
// SubjectForgotten handler for every subject the key store has forgotten (after a
// snapshot restore, at a runner's start), InSnapshots says which snapshots may
// still hold a forgotten subject's data, and ScrubSnapshots rewrites them without it.
//
// It sits below package projector: the runtime purges at start and keeps its
// snapshot stores scrubbed (Config.ScrubStore) with these functions, and the
// operator's commands call them directly. It imports readmodel, snapshot and shred,
// never projector.
package forget
