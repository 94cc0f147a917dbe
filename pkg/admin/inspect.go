package admin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// Inspection asks where a projection version stands, from what is stored — in
// PostgreSQL and Kafka — rather than from a running instance, so it sees every
// instance's partitions and works while none runs.
type Inspection struct {
	Pool    *pgxpool.Pool
	Schema  string // framework schema; default readmodel.FrameworkSchemaDefault
	Brokers []string
	// Client, when set, is used instead of Brokers and left open: a caller that
	// inspects again and again (a status page) keeps one. Without
	// it, Inspect opens a client over Brokers and closes it before returning.
	Client     *eventlog.Client
	Topic      string
	Projection string
	Version    int
	ReadyLag   int64         // per partition, as Config.ReadyLag: default projector.ReadyLagDefault; projector.ReadyLagZero for 0
	Interval   time.Duration // sampling interval for rates; 0 = no rates
	Effects    []string      // effect names whose watermarks to report
}

// Inspect returns the status of every partition of the topic for the projection.
// With an Interval it samples twice to measure events/s and the ETA. Each
// partition's state is decided here, from its stored position and its log end, by
// the Inspection's ReadyLag (see projector.ReadyRule), whatever any instance believes.
//
// Inspect only reads: a database where the framework schema does not exist yet,
// or where the projection version has no stored position, is reported with
// NeverRun set and every partition "not started".
func Inspect(ctx context.Context, in Inspection) (projector.Status, error) {
	if in.Schema == "" {
		in.Schema = readmodel.FrameworkSchemaDefault
	}
	if in.ReadyLag < 0 && in.ReadyLag != projector.ReadyLagZero {
		return projector.Status{}, fmt.Errorf("projector: inspect: ReadyLag %d: must not be negative (projector.ReadyLagZero asks for 0)", in.ReadyLag)
	}
	framework, err := frameworkExists(ctx, in.Pool, in.Schema)
	if err != nil {
		return projector.Status{}, err
	}
	var db stored
	if framework {
		if db, err = readStored(ctx, in); err != nil {
			return projector.Status{}, err
		}
	}
	n, ends, err := logEnds(ctx, in)
	if err != nil {
		return projector.Status{}, err
	}
	st := projector.Status{Projection: in.Projection, Version: in.Version, Topic: in.Topic, Ready: true,
		ReadyLag: readyLagOf(in.ReadyLag), ReadyRule: projector.ReadyRule, NeverRun: len(db.after) == 0}
	for _, eff := range in.Effects {
		addEffect(&st, in, eff, n, ends, db)
	}
	for p := range n {
		addPartition(&st, in, p, ends[p], db)
	}
	if st.NeverRun {
		st.Ready = false
	}
	return st, nil
}

// stored is what Inspect reads from the framework schema.
type stored struct {
	before, after map[int]offsets.Position // per partition, Interval apart
	parked        map[int]int              // open parked events per partition
	parkedEffects map[string]int           // open parked runs per effect
	marks         map[string]map[int]int64 // effect watermarks per effect and partition
	deadlocks     map[int]int64            // batches lost to a deadlock per partition, every instance's
}

// readStored reads the positions (twice, Interval apart, for rates), the deadlocks
// counted, the parked counts and the effects' watermarks.
func readStored(ctx context.Context, in Inspection) (stored, error) {
	offs := offsets.NewStore(in.Schema)
	db := stored{marks: map[string]map[int]int64{}}
	var err error
	if db.before, err = positions(ctx, offs, in); err != nil {
		return db, err
	}
	db.after = db.before
	if in.Interval > 0 {
		if err := retry.Sleep(ctx, in.Interval); err != nil {
			return db, err
		}
		if db.after, err = positions(ctx, offs, in); err != nil {
			return db, err
		}
	}
	if db.deadlocks, err = store.Deadlocks(ctx, in.Pool, in.Schema, in.Projection, in.Version, in.Topic); err != nil {
		return db, err
	}
	dlq := NewDLQ(in.Pool, in.Schema, in.Projection, in.Version)
	if db.parked, err = dlq.Counts(ctx); err != nil {
		return db, err
	}
	if len(in.Effects) == 0 {
		return db, nil
	}
	if db.parkedEffects, err = dlq.EffectCounts(ctx); err != nil {
		return db, err
	}
	for _, eff := range in.Effects {
		marks, err := offs.ListEffect(ctx, in.Pool, eff, in.Projection, in.Version)
		if err != nil {
			return db, err
		}
		db.marks[eff] = map[int]int64{}
		for _, m := range marks {
			if m.Topic == in.Topic {
				db.marks[eff][m.Partition] = m.Next
			}
		}
	}
	return db, nil
}

// positions returns the stored positions on the inspected topic, by partition.
func positions(ctx context.Context, store *offsets.Store, in Inspection) (map[int]offsets.Position, error) {
	list, err := store.List(ctx, in.Pool, in.Projection, in.Version)
	if err != nil {
		return nil, err
	}
	out := map[int]offsets.Position{}
	for _, p := range list {
		if p.Topic == in.Topic {
			out[p.Partition] = p
		}
	}
	return out, nil
}

// logEnds returns the topic's partition count and each partition's end.
func logEnds(ctx context.Context, in Inspection) (int, map[int]int64, error) {
	kafkaAt := "Kafka"
	if len(in.Brokers) > 0 {
		kafkaAt += " at " + strings.Join(in.Brokers, ",")
	}
	kc := in.Client
	if kc == nil {
		kc = eventlog.NewClient(in.Brokers)
		defer kc.Close()
	}
	n, err := kc.Partitions(ctx, in.Topic)
	if err != nil {
		return 0, nil, fmt.Errorf("projector: inspect: %s: %w", kafkaAt, err)
	}
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := kc.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{in.Topic: reqs}})
	if err != nil {
		return 0, nil, fmt.Errorf("projector: list offsets of %s on %s: %w", in.Topic, kafkaAt, err)
	}
	ends := map[int]int64{}
	for _, po := range resp.Topics[in.Topic] {
		ends[po.Partition] = po.LastOffset
	}
	return n, ends, nil
}

// addEffect adds an effect's stored state to st.
func addEffect(st *projector.Status, in Inspection, eff string, n int, ends map[int]int64, db stored) {
	es := projector.EffectStatus{Effect: eff, Watermarks: map[int]int64{}, Parked: int64(db.parkedEffects[eff])}
	for p, next := range db.marks[eff] {
		es.Watermarks[p] = next
	}
	for p := range n {
		es.Position += es.Watermarks[p]
		es.Lag += max(0, ends[p]-es.Watermarks[p])
	}
	if st.EffectLag == nil {
		st.EffectLag = map[string]int64{}
	}
	st.EffectLag[eff] = es.Lag
	st.StoredEffects = append(st.StoredEffects, es)
}

// addPartition adds a partition's state to st, decided by its stored position and
// its log end.
func addPartition(st *projector.Status, in Inspection, p int, end int64, db stored) {
	pos := db.after[p]
	ps := projector.PartitionStatus{Topic: in.Topic, Partition: p, Next: pos.Next, HighWater: end, Parked: int64(db.parked[p]),
		Consumed: pos.Consumed, Deadlocks: db.deadlocks[p]}
	st.Deadlocks += ps.Deadlocks
	ps.Lag = max(0, end-pos.Next)
	if in.Interval > 0 {
		ps.EventsPerSec = float64(pos.Consumed-db.before[p].Consumed) / in.Interval.Seconds()
		if ps.EventsPerSec > 0 {
			ps.ETASeconds = float64(ps.Lag) / ps.EventsPerSec
		}
	}
	switch {
	case pos.Member == "" && end > 0:
		ps.State = "not started"
	case ps.Lag <= st.ReadyLag:
		ps.State = projector.StateLive
	default:
		ps.State = projector.StateReplaying
	}
	if ps.State != projector.StateLive {
		st.Ready = false
	}
	st.Lag += ps.Lag
	st.Partitions = append(st.Partitions, ps)
}

// frameworkExists reports whether the framework schema has been set up (its
// migrations applied), without creating anything. One with migrations missing is
// an error saying how to apply them.
func frameworkExists(ctx context.Context, pool *pgxpool.Pool, schema string) (bool, error) {
	states, err := store.Status(ctx, pool, schema)
	if err != nil {
		return false, fmt.Errorf("projector: inspect: %w", err)
	}
	var applied, pending []int
	for _, s := range states {
		switch {
		case s.AppliedAt != nil:
			applied = append(applied, s.Version)
		case !s.Unknown:
			pending = append(pending, s.Version)
		}
	}
	if len(applied) == 0 {
		// No migration recorded: nothing was ever set up here, unless an older build
		// made the tables before migrations were numbered.
		legacy, err := store.OffsetsExist(ctx, pool, schema)
		if err != nil {
			return false, fmt.Errorf("projector: inspect: %w", err)
		}
		if legacy {
			return false, fmt.Errorf("projector: inspect: the framework schema %s predates numbered migrations: 'projector migrate up' (or any 'projector run') brings it up to date", schema)
		}
		return false, nil
	}
	if len(pending) > 0 {
		return false, fmt.Errorf("projector: inspect: the framework schema %s lacks migrations %v: 'projector migrate up' (or any 'projector run') applies them", schema, pending)
	}
	return true, nil
}

// LogStarts returns each partition's first offset: what the log still holds. It asks
// over a client it closes before returning.
func LogStarts(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	kc := eventlog.NewClient(brokers)
	defer kc.Close()
	return logStarts(ctx, kc, topic)
}

func logStarts(ctx context.Context, kc *eventlog.Client, topic string) (map[int]int64, error) {
	n, err := kc.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.FirstOffsetOf(p))
	}
	resp, err := kc.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("projector: list offsets of %s: %w", topic, err)
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		out[po.Partition] = po.FirstOffset
	}
	return out, nil
}

// readyLagOf turns a ReadyLag setting into the lag it allows, as projector.Config does.
func readyLagOf(v int64) int64 {
	switch v {
	case 0:
		return projector.ReadyLagDefault
	case projector.ReadyLagZero:
		return 0
	}
	return v
}
