package projector

import (
	"go.uber.org/zap"

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

// batch records a committed batch: position, lag, rate, state changes.
func recordBatch(row *lane.Row, next, highWater int64, out outcome, readyLag int64, log *zap.Logger) {
	row.Settle(int64(out.applied+out.duplicates+out.ignored+out.parked), func(s *PartitionStatus, perSec float64) {
		settleBatch(s, perSec, next, highWater, out, readyLag, log)
	})
}

func settleBatch(s *PartitionStatus, perSec float64, next, highWater int64, out outcome, readyLag int64, log *zap.Logger) {
	s.Next = next
	if highWater > s.HighWater {
		s.HighWater = highWater
	}
	s.Lag = max(0, s.HighWater-next)
	s.Applied += int64(out.applied)
	s.Duplicates += int64(out.duplicates)
	s.Parked += int64(out.parked)
	s.EventsPerSec = perSec
	if s.EventsPerSec > 0 {
		s.ETASeconds = float64(s.Lag) / s.EventsPerSec
	}
	wasLive := s.State == StateLive
	if s.Lag <= readyLag {
		s.State = StateLive
		if !wasLive {
			log.Info("partition caught up: live", zap.Int64("next_offset", next), zap.Int64("applied", s.Applied))
		}
	} else {
		s.State = StateReplaying
	}
}

// idle records that no message arrived: the reader is at the end of the partition.
func recordIdle(row *lane.Row, next int64) {
	row.Settle(0, func(s *PartitionStatus, perSec float64) {
		s.Next = next
		if s.HighWater < next {
			s.HighWater = next
		}
		s.Lag = max(0, s.HighWater-next)
		s.EventsPerSec = perSec
		if s.Lag == 0 {
			s.State, s.ETASeconds = StateLive, 0
		}
	})
}
