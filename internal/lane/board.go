package lane

import (
	"sort"
	"sync"
)

// Status is what one Runner's instance does; package projector exports it as
// projector.Status.
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
	// retried in halves after a backoff (projector_deadlocks_total); in Inspect's
	// status, every instance's since the positions were first stored.
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

// Board is the status board of one Runner: the instance's Status, a Row per
// partition it owns, and one per effect on each of them.
type Board struct {
	mu      sync.Mutex
	reached bool // Run has found the topic on Kafka
	base    Status
	parts   map[int]*Row
	fxParts map[fxPart]*Row
	effects map[string]map[string]int64
}

// NewBoard returns an empty board whose Status starts as base.
func NewBoard(base Status) *Board {
	return &Board{parts: map[int]*Row{}, base: base}
}

// fxPart names an effect on a partition.
type fxPart struct {
	effect    string
	partition int
}

// EffectPartition returns the row of an effect on a partition.
func (b *Board) EffectPartition(effect string, p int) *Row {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fxParts == nil {
		b.fxParts = map[fxPart]*Row{}
	}
	k := fxPart{effect, p}
	ps, ok := b.fxParts[k]
	if !ok {
		ps = NewRow(PartitionStatus{Topic: b.base.Topic, Partition: p, Effect: effect})
		b.fxParts[k] = ps
	}
	return ps
}

// CountEffect counts n runs of an effect with an outcome.
func (b *Board) CountEffect(effect, outcome string, n int64) {
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

// Partition returns the read model's row of a partition.
func (b *Board) Partition(p int) *Row {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps, ok := b.parts[p]
	if !ok {
		ps = NewRow(PartitionStatus{Topic: b.base.Topic, Partition: p})
		b.parts[p] = ps
	}
	return ps
}

// Joined records a generation joined and drops the rows of partitions no longer owned.
func (b *Board) Joined(gen int32, member string, assigned []int) {
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

// Wait records what the instance waits for, with the last error.
func (b *Board) Wait(why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.base.Waiting = why
}

// ReachedTopic records that Run found the topic: it waits for nothing more.
func (b *Board) ReachedTopic() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reached, b.base.Waiting = true, ""
}

// Left records that the instance left its group.
func (b *Board) Left() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.base.Joined = false
}

// Snapshot returns the board as a Status.
func (b *Board) Snapshot() Status {
	b.mu.Lock()
	s := b.base
	parts := make([]*Row, 0, len(b.parts))
	for _, p := range b.parts {
		parts = append(parts, p)
	}
	fxParts := make([]*Row, 0, len(b.fxParts))
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
		ps := p.Get()
		s.Partitions = append(s.Partitions, ps)
		s.Lag += ps.Lag
		if ps.State != StateLive {
			s.Ready = false
		}
	}
	sort.Slice(s.Partitions, func(i, j int) bool { return s.Partitions[i].Partition < s.Partitions[j].Partition })
	for _, p := range fxParts {
		s.EffectPartitions = append(s.EffectPartitions, p.Get())
	}
	sort.Slice(s.EffectPartitions, func(i, j int) bool {
		a, b := s.EffectPartitions[i], s.EffectPartitions[j]
		return a.Effect < b.Effect || a.Effect == b.Effect && a.Partition < b.Partition
	})
	return s
}

// Deadlocked counts a deadlock in the instance's status.
func (b *Board) Deadlocked() {
	b.mu.Lock()
	b.base.Deadlocks++
	b.mu.Unlock()
}
