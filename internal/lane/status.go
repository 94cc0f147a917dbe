package lane

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Partition states.
const (
	StateClaiming  = "claiming"  // taking the partition over
	StateReplaying = "replaying" // catching up: its lag above ReadyLag
	StateLive      = "live"      // its lag at most ReadyLag
	StateReleased  = "released"  // no longer owned by this instance

	// StateCatchingUp is an effect's, on a partition, while it reads from the log
	// what the read model committed before the effect caught up with it (after a
	// claim, or when the effect fell behind); it turns live when it runs on the
	// read model's batches as they commit.
	StateCatchingUp = "catching-up"
)

// PartitionStatus is one partition's progress as this instance sees it: the read
// model's, or an effect's on it (Effect set). Package projector reports it.
type PartitionStatus struct {
	Topic        string  `json:"topic"`
	Partition    int     `json:"partition"`
	State        string  `json:"state"`
	Next         int64   `json:"next_offset"`
	HighWater    int64   `json:"high_water"`
	Lag          int64   `json:"lag"`
	EventsPerSec float64 `json:"events_per_sec"`
	ETASeconds   float64 `json:"eta_seconds"`
	Applied      int64   `json:"applied"`
	// Consumed counts the events read and settled (applied, duplicates, skipped,
	// parked) at the stored position, over every instance and restart (Inspect only).
	Consumed   int64  `json:"consumed,omitempty"`
	Duplicates int64  `json:"duplicates"`
	Parked     int64  `json:"parked"`
	Waiting    string `json:"waiting,omitempty"` // what it waits on: the transient error being retried, if any
	// Deadlocks counts the partition's batches lost to a deadlock since it was
	// claimed here, each retried in halves; in Inspect's status, over every instance
	// and restart (stored with the partition's position).
	Deadlocks int64 `json:"deadlocks,omitempty"`

	// Effect names the effect, in Status.EffectPartitions; there Next is the
	// effect's watermark, HighWater the read model's stored position, Lag the events
	// between them, Parked the runs parked, and Waiting what the effect waits on:
	// Redis, the downstream system (its last error), or keys another holder has.
	Effect string `json:"effect,omitempty"`
	// InFlight counts an effect's runs started and not yet settled in the ledger:
	// at most the effect concurrency, and all that a crash now could run twice.
	InFlight int `json:"in_flight,omitempty"`
}

// Row is a lane's row on the status board: its PartitionStatus, behind a lock, and
// its rate meter.
type Row struct {
	mu   sync.Mutex
	s    PartitionStatus
	rate rateMeter
}

// NewRow returns a row that starts as s.
func NewRow(s PartitionStatus) *Row { return &Row{s: s} }

// Set changes the row under its lock.
func (r *Row) Set(fn func(*PartitionStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.s)
}

// Settle records that n events were settled now, and changes the row with the
// events/s of the last few seconds.
func (r *Row) Settle(n int64, fn func(s *PartitionStatus, perSec float64)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.s, r.rate.add(time.Now(), n))
}

// Batch is what a read model's committed batch did, for its partition's row.
type Batch struct {
	Next      int64 // the stored position after the batch
	HighWater int64 // the partition's log end, as the batch's last message saw it

	// What the batch did with its events.
	Applied, Duplicates, Ignored, Parked int
}

// Committed records a read model's committed batch: position, lag, counts and
// rate. The row is live while its lag is at most readyLag (turning live is logged),
// replaying otherwise.
func (r *Row) Committed(b Batch, readyLag int64, log *zap.Logger) {
	r.Settle(int64(b.Applied+b.Duplicates+b.Ignored+b.Parked), func(s *PartitionStatus, perSec float64) {
		s.Next = b.Next
		if b.HighWater > s.HighWater {
			s.HighWater = b.HighWater
		}
		s.Lag = max(0, s.HighWater-b.Next)
		s.Applied += int64(b.Applied)
		s.Duplicates += int64(b.Duplicates)
		s.Parked += int64(b.Parked)
		s.EventsPerSec = perSec
		if s.EventsPerSec > 0 {
			s.ETASeconds = float64(s.Lag) / s.EventsPerSec
		}
		wasLive := s.State == StateLive
		if s.Lag <= readyLag {
			s.State = StateLive
			if !wasLive {
				log.Info("partition caught up: live", zap.Int64("next_offset", b.Next), zap.Int64("applied", s.Applied))
			}
		} else {
			s.State = StateReplaying
		}
	})
}

// Idle records that no message arrived: the reader is at the end of the partition.
func (r *Row) Idle(next int64) {
	r.Settle(0, func(s *PartitionStatus, perSec float64) {
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

// Get returns a copy of the row.
func (r *Row) Get() PartitionStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

// rateMeter is events/s over the last few seconds.
type rateMeter struct {
	samples []rateSample
}

type rateSample struct {
	at time.Time
	n  int64
}

const rateWindow = 5 * time.Second

func (m *rateMeter) add(now time.Time, n int64) float64 {
	m.samples = append(m.samples, rateSample{now, n})
	cut := 0
	for cut < len(m.samples)-1 && now.Sub(m.samples[cut].at) > rateWindow {
		cut++
	}
	m.samples = m.samples[cut:]
	if len(m.samples) < 2 {
		return 0
	}
	var total int64
	for _, s := range m.samples[1:] {
		total += s.n
	}
	span := now.Sub(m.samples[0].at).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(total) / span
}
