package projector

import (
	"iter"

	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/snapshotting"
)

// SnapshotPolicy says when the runtime snapshots its projection (see
// snapshotting.Policy: any trigger that is set fires a snapshot; the newest Keep
// are kept). With Config.Keys, the runner also keeps its Store free of forgotten
// subjects' data (see Config.ScrubStore), policy or not.
type SnapshotPolicy = snapshotting.Policy

// snapshotting is what the snapshotter and the scrubber need of this runner.
func (r *Runner) snapshotting() snapshotting.Source {
	return snapshotting.Source{Pool: r.cfg.Pool, Schema: r.cfg.Schema, Projection: r.cfg.Projection, Topic: r.cfg.Topic,
		Offsets: r.offsets, Keys: r.cfg.Keys, Log: r.log, Mu: &r.storeMu}
}

// appliedTypes yields the type of each entry a committed batch applied, in order.
func appliedTypes(entries []judge.Entry) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := range entries {
			if entries[i].Act == judge.Apply && !yield(entries[i].Event.Type) {
				return
			}
		}
	}
}
