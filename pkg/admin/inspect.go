package admin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

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
	readyLag := readyLagOf(in.ReadyLag)
	framework, err := frameworkExists(ctx, in.Pool, in.Schema)
	if err != nil {
		return projector.Status{}, err
	}
	store := offsets.NewStore(in.Schema)
	list := func() ([]offsets.Position, error) {
		if !framework {
			return nil, nil
		}
		return store.List(ctx, in.Pool, in.Projection, in.Version)
	}
	first, err := list()
	if err != nil {
		return projector.Status{}, err
	}
	var second []offsets.Position
	if in.Interval > 0 && framework {
		select {
		case <-ctx.Done():
			return projector.Status{}, ctx.Err()
		case <-time.After(in.Interval):
		}
		if second, err = list(); err != nil {
			return projector.Status{}, err
		}
	} else {
		second = first
	}
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
		return projector.Status{}, fmt.Errorf("projector: inspect: %s: %w", kafkaAt, err)
	}
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := kc.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{in.Topic: reqs}})
	if err != nil {
		return projector.Status{}, fmt.Errorf("projector: list offsets of %s on %s: %w", in.Topic, kafkaAt, err)
	}
	ends := map[int]int64{}
	for _, po := range resp.Topics[in.Topic] {
		ends[po.Partition] = po.LastOffset
	}
	parked, parkedEffects := map[int]int{}, map[string]int{}
	if framework {
		dlq := NewDLQ(in.Pool, in.Schema, in.Projection, in.Version)
		if parked, err = dlq.Counts(ctx); err != nil {
			return projector.Status{}, err
		}
		if len(in.Effects) > 0 {
			if parkedEffects, err = dlq.EffectCounts(ctx); err != nil {
				return projector.Status{}, err
			}
		}
	}
	before := map[int]offsets.Position{}
	for _, p := range first {
		if p.Topic == in.Topic {
			before[p.Partition] = p
		}
	}
	after := map[int]offsets.Position{}
	for _, p := range second {
		if p.Topic == in.Topic {
			after[p.Partition] = p
		}
	}
	st := projector.Status{Projection: in.Projection, Version: in.Version, Topic: in.Topic, Ready: true, ReadyLag: readyLag, ReadyRule: projector.ReadyRule,
		NeverRun: len(after) == 0}
	for _, eff := range in.Effects {
		var marks []offsets.Position
		if framework {
			if marks, err = store.ListEffect(ctx, in.Pool, eff, in.Projection, in.Version); err != nil {
				return projector.Status{}, err
			}
		}
		es := projector.EffectStatus{Effect: eff, Watermarks: map[int]int64{}, Parked: int64(parkedEffects[eff])}
		for _, m := range marks {
			if m.Topic == in.Topic {
				es.Watermarks[m.Partition] = m.Next
			}
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
	for p := range n {
		pos := after[p]
		ps := projector.PartitionStatus{Topic: in.Topic, Partition: p, Next: pos.Next, HighWater: ends[p], Parked: int64(parked[p]), Consumed: pos.Consumed}
		ps.Lag = max(0, ends[p]-pos.Next)
		if in.Interval > 0 {
			ps.EventsPerSec = float64(pos.Consumed-before[p].Consumed) / in.Interval.Seconds()
			if ps.EventsPerSec > 0 {
				ps.ETASeconds = float64(ps.Lag) / ps.EventsPerSec
			}
		}
		switch {
		case pos.Member == "" && ends[p] > 0:
			ps.State = "not started"
		case ps.Lag <= readyLag:
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
	if st.NeverRun {
		st.Ready = false
	}
	return st, nil
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
		var legacy bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schema, "offsets"}.Sanitize()).Scan(&legacy); err != nil {
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
