package projector

import (
	"sort"
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

// PartitionStatus is one partition's progress as this instance sees it.
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
	// claimed here, each retried in halves.
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

// Status is what this instance does.
type Status struct {
	Projection string `json:"projection"`
	Version    int    `json:"version"`
	Topic      string `json:"topic"`
	Group      string `json:"group"`
	Member     string `json:"member,omitempty"`
	Generation int32  `json:"generation"`
	Joined     bool   `json:"joined"`
	// Waiting says what the instance waits for before it can consume — Kafka not
	// reached yet, unreachable, the topic missing — with the last error; empty once
	// Run has found the topic.
	Waiting string `json:"waiting,omitempty"`
	Ready   bool   `json:"ready"`
	Lag     int64  `json:"lag"` // the sum over the partitions, for information: readiness is per partition
	// Deadlocks counts this instance's batches lost to a deadlock (40P01), each
	// retried in halves after a backoff (projector_deadlocks_total).
	Deadlocks int64 `json:"deadlocks,omitempty"`
	// ReadyLag is the lag a live partition may have, and ReadyRule how readiness
	// follows from it (ReadyRule: per partition).
	ReadyLag   int64             `json:"ready_lag"`
	ReadyRule  string            `json:"ready_rule"`
	Partitions []PartitionStatus `json:"partitions"`
	// NeverRun is set when the projection version has no stored position on the
	// topic: it has never run against this database (Inspect only).
	NeverRun bool `json:"never_run,omitempty"`
	// EffectLag is, per effect, the events between its watermark and the log end
	// (Inspect only).
	EffectLag map[string]int64 `json:"effect_lag,omitempty"`
	// StoredEffects is each effect's stored state, in the order asked (Inspect only).
	StoredEffects []EffectStatus `json:"stored_effects,omitempty"`
	// Effects counts this instance's effect runs per effect and outcome (fired,
	// suppressed_ledger, suppressed_horizon, retried, parked, lease_lost).
	Effects map[string]map[string]int64 `json:"effects,omitempty"`
	// EffectPartitions is each effect's progress on each partition this instance
	// owns, by effect and partition (see PartitionStatus.Effect).
	EffectPartitions []PartitionStatus `json:"effect_partitions,omitempty"`
}

// EffectStatus is one effect's stored state: its durable watermark per partition
// (events below it never fire again), how far it trails the log end, and its open
// parked runs.
type EffectStatus struct {
	Effect     string        `json:"effect"`
	Watermarks map[int]int64 `json:"watermarks"` // per partition: the next offset the effect considers
	Position   int64         `json:"position"`   // the watermarks summed over the partitions
	Lag        int64         `json:"lag"`        // events between the watermarks and the log end
	Parked     int64         `json:"parked"`     // parked runs not resolved (see DLQ.ListEffects)
}

type statusBoard struct {
	mu      sync.Mutex
	reached bool // Run has found the topic on Kafka
	base    Status
	parts   map[int]*partStatus
	fxParts map[fxPart]*partStatus
	effects map[string]map[string]int64
}

// fxPart names an effect on a partition.
type fxPart struct {
	effect    string
	partition int
}

// effectPartition returns the status of an effect on a partition.
func (b *statusBoard) effectPartition(effect string, p int) *partStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fxParts == nil {
		b.fxParts = map[fxPart]*partStatus{}
	}
	k := fxPart{effect, p}
	ps, ok := b.fxParts[k]
	if !ok {
		ps = &partStatus{s: PartitionStatus{Topic: b.base.Topic, Partition: p, Effect: effect}}
		b.fxParts[k] = ps
	}
	return ps
}

func (b *statusBoard) countEffect(effect, outcome string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.effects == nil {
		b.effects = map[string]map[string]int64{}
	}
	if b.effects[effect] == nil {
		b.effects[effect] = map[string]int64{}
	}
	b.effects[effect][outcome] += n
}

type partStatus struct {
	mu   sync.Mutex
	s    PartitionStatus
	rate rateMeter
}

func (b *statusBoard) partition(p int) *partStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps, ok := b.parts[p]
	if !ok {
		ps = &partStatus{s: PartitionStatus{Topic: b.base.Topic, Partition: p}}
		b.parts[p] = ps
	}
	return ps
}

func (b *statusBoard) joined(gen int32, member string, assigned []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.base.Joined, b.base.Generation, b.base.Member = true, gen, member
	keep := map[int]bool{}
	for _, p := range assigned {
		keep[p] = true
	}
	for p := range b.parts {
		if !keep[p] {
			delete(b.parts, p)
		}
	}
	for k := range b.fxParts {
		if !keep[k.partition] {
			delete(b.fxParts, k)
		}
	}
}

// wait records what the instance waits for, with the last error.
func (b *statusBoard) wait(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.base.Waiting = why
}

// reachedTopic records that Run found the topic: it waits for nothing more.
func (b *statusBoard) reachedTopic() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reached, b.base.Waiting = true, ""
}

func (b *statusBoard) left() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.base.Joined = false
}

func (b *statusBoard) snapshot() Status {
	b.mu.Lock()
	s := b.base
	parts := make([]*partStatus, 0, len(b.parts))
	for _, p := range b.parts {
		parts = append(parts, p)
	}
	fxParts := make([]*partStatus, 0, len(b.fxParts))
	for _, p := range b.fxParts {
		fxParts = append(fxParts, p)
	}
	if len(b.effects) > 0 {
		s.Effects = map[string]map[string]int64{}
		for e, m := range b.effects {
			s.Effects[e] = map[string]int64{}
			for o, n := range m {
				s.Effects[e][o] = n
			}
		}
	}
	reached := b.reached
	b.mu.Unlock()
	if !reached && s.Waiting == "" {
		s.Waiting = "topic " + s.Topic + " on Kafka: not reached yet"
	}
	s.Ready = s.Joined
	for _, p := range parts {
		p.mu.Lock()
		ps := p.s
		p.mu.Unlock()
		s.Partitions = append(s.Partitions, ps)
		s.Lag += ps.Lag
		if ps.State != StateLive {
			s.Ready = false
		}
	}
	sort.Slice(s.Partitions, func(i, j int) bool { return s.Partitions[i].Partition < s.Partitions[j].Partition })
	for _, p := range fxParts {
		p.mu.Lock()
		s.EffectPartitions = append(s.EffectPartitions, p.s)
		p.mu.Unlock()
	}
	sort.Slice(s.EffectPartitions, func(i, j int) bool {
		a, b := s.EffectPartitions[i], s.EffectPartitions[j]
		return a.Effect < b.Effect || a.Effect == b.Effect && a.Partition < b.Partition
	})
	return s
}

func (p *partStatus) set(fn func(*PartitionStatus)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn(&p.s)
}

// batch records a committed batch: position, lag, rate, state changes.
func (p *partStatus) batch(next, highWater int64, out outcome, readyLag int64, log *zap.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.s
	s.Next = next
	if highWater > s.HighWater {
		s.HighWater = highWater
	}
	s.Lag = max(0, s.HighWater-next)
	s.Applied += int64(out.applied)
	s.Duplicates += int64(out.duplicates)
	s.Parked += int64(out.parked)
	s.EventsPerSec = p.rate.add(time.Now(), int64(out.applied+out.duplicates+out.ignored+out.parked))
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
func (p *partStatus) idle(next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.s.Next = next
	if p.s.HighWater < next {
		p.s.HighWater = next
	}
	p.s.Lag = max(0, p.s.HighWater-next)
	p.s.EventsPerSec = p.rate.add(time.Now(), 0)
	if p.s.Lag == 0 {
		p.s.State, p.s.ETASeconds = StateLive, 0
	}
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
