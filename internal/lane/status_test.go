package lane

import (
	"testing"

	"go.uber.org/zap"
)

// A committed batch moves the row's position, lag and counts; the row turns live
// when its lag is within readyLag and back to replaying when it falls behind; an
// idle reader at the log end is live with no lag.
func TestRowCommittedAndIdle(t *testing.T) {
	t.Parallel()
	row := NewRow(PartitionStatus{Partition: 3, State: StateClaiming})
	row.Committed(Batch{Next: 100, HighWater: 1000, Applied: 90, Duplicates: 5, Ignored: 3, Parked: 2}, 10, zap.NewNop())
	s := row.Get()
	if s.Next != 100 || s.HighWater != 1000 || s.Lag != 900 || s.State != StateReplaying || s.Applied != 90 || s.Duplicates != 5 || s.Parked != 2 {
		t.Fatalf("after a batch far behind: %+v", s)
	}
	row.Committed(Batch{Next: 995, HighWater: 900, Applied: 895}, 10, zap.NewNop())
	if s = row.Get(); s.HighWater != 1000 || s.Lag != 5 || s.State != StateLive || s.Applied != 985 {
		t.Fatalf("within readyLag (an older high water kept): %+v", s)
	}
	row.Committed(Batch{Next: 996, HighWater: 2000}, 10, zap.NewNop())
	if s = row.Get(); s.Lag != 1004 || s.State != StateReplaying {
		t.Fatalf("behind again: %+v", s)
	}
	row.Idle(2000)
	if s = row.Get(); s.Next != 2000 || s.Lag != 0 || s.State != StateLive || s.ETASeconds != 0 {
		t.Fatalf("idle at the log end: %+v", s)
	}
}
