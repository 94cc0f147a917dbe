package projector

import (
	"github.com/projector/projector/internal/lane"
)

// Partition states (see package internal/lane).
const (
	StateClaiming   = lane.StateClaiming
	StateReplaying  = lane.StateReplaying
	StateLive       = lane.StateLive
	StateReleased   = lane.StateReleased
	StateCatchingUp = lane.StateCatchingUp
)

// PartitionStatus is one partition's progress as this instance sees it: the read
// model's (Status.Partitions), or an effect's on it (Status.EffectPartitions).
type PartitionStatus = lane.PartitionStatus

// Status is what this instance does (see lane.Status).
type Status = lane.Status

// EffectStatus is one effect's stored state (see lane.EffectStatus).
type EffectStatus = lane.EffectStatus

// batch is what a committed batch did, for its partition's row (lane.Row.Committed).
func (o outcome) batch(next, highWater int64) lane.Batch {
	return lane.Batch{Next: next, HighWater: highWater, Applied: o.applied, Duplicates: o.duplicates, Ignored: o.ignored, Parked: o.parked}
}
