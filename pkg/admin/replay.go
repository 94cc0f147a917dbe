package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/snapshot"
)

// PointInTime asks for a projection's read model as it was at a point of the log,
// built in a schema of its own beside the live one.
type PointInTime struct {
	Pool       *pgxpool.Pool
	Brokers    []string
	Topic      string
	Projection *readmodel.Projection
	Into       string        // schema of the rebuilt tables; the replay's own bookkeeping goes to INTO_projector
	Until      map[int]int64 // the first offset not applied, per partition; or
	UntilTime  time.Time     // the first event appended at or after this time is not applied
	Store      snapshot.Store
	Keys       shred.KeyStore // decrypts personal data; after a restore, forgotten subjects are purged
	Logger     *zap.Logger
	// Started, when set, is called with the runner once the replay starts (after any
	// snapshot is restored): a caller can draw progress from its Status.
	Started func(ctx context.Context, r *projector.Runner) (stop func())
}

// ReplayResult says how a point-in-time replay was built.
type ReplayResult struct {
	Snapshot string        `json:"snapshot,omitempty"` // the snapshot it started from, if any
	Until    map[int]int64 `json:"until"`
	Events   int64         `json:"events"` // events up to the point
	Replayed int64         `json:"replayed"`
}

// UntilOffsets turns a time into per-partition offsets: for each partition, the first
// offset whose Kafka timestamp is at or after t (the end when there is none). It asks
// over a client it closes before returning.
func UntilOffsets(ctx context.Context, brokers []string, topic string, t time.Time) (map[int]int64, error) {
	kc := eventlog.NewClient(brokers)
	defer kc.Close()
	return untilOffsets(ctx, kc, topic, t)
}

func untilOffsets(ctx context.Context, kc *eventlog.Client, topic string, t time.Time) (map[int]int64, error) {
	n, err := kc.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	client := kc.Kafka()
	var byTime, ends []kafka.OffsetRequest
	for p := range n {
		byTime = append(byTime, kafka.TimeOffsetOf(p, t))
		ends = append(ends, kafka.LastOffsetOf(p))
	}
	out := map[int]int64{}
	for _, reqs := range [][]kafka.OffsetRequest{ends, byTime} {
		resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
		if err != nil {
			return nil, fmt.Errorf("projector: offsets of %s at %s: %w", topic, t.Format(time.RFC3339), err)
		}
		for _, po := range resp.Topics[topic] {
			if po.Error != nil {
				return nil, po.Error
			}
			for off := range po.Offsets {
				if off >= 0 { // -1: no event at or after t; the end stays
					out[po.Partition] = off
				}
			}
			if len(po.Offsets) == 0 && po.LastOffset >= 0 {
				out[po.Partition] = po.LastOffset
			}
		}
	}
	return out, nil
}

// pointOffsets returns the point of a replay as offsets, per partition, clamped to
// the log's end: a point past it would never be reached.
func pointOffsets(ctx context.Context, kc *eventlog.Client, pit PointInTime) (map[int]int64, error) {
	until := pit.Until
	if until == nil {
		var err error
		if until, err = untilOffsets(ctx, kc, pit.Topic, pit.UntilTime); err != nil {
			return nil, err
		}
	}
	ends, err := untilOffsets(ctx, kc, pit.Topic, time.Now().Add(24*time.Hour))
	if err != nil {
		return nil, err
	}
	clamped := map[int]int64{}
	for part, end := range ends {
		clamped[part] = min(until[part], end)
	}
	return clamped, nil
}

// ReplayUntil builds the read model as it was at the point: it restores the newest
// snapshot whose offsets are all at or before the point (if a store is given and one
// exists), then replays each partition up to the point, into pit.Into.
func ReplayUntil(ctx context.Context, pit PointInTime) (ReplayResult, error) {
	if pit.Into == "" {
		return ReplayResult{}, errors.New("projector: replay: no target schema")
	}
	if pit.Logger == nil {
		pit.Logger = zap.NewNop()
	}
	// One client for the replay's own questions; the Runner below has its own.
	kc := eventlog.NewClient(pit.Brokers)
	defer kc.Close()
	until, err := pointOffsets(ctx, kc, pit)
	if err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Until: until}
	for _, o := range until {
		res.Events += o
	}
	proj := pit.Projection.InSchema(pit.Into)
	fw := pit.Into + "_projector"
	r, err := projector.New(projector.Config{Brokers: pit.Brokers, Topic: pit.Topic, Projection: proj, Pool: pit.Pool, Schema: fw,
		GroupID: fmt.Sprintf("projector.replay.%s.%d", pit.Into, time.Now().UnixNano()), Logger: pit.Logger, StopAt: until, Keys: pit.Keys,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond})
	if err != nil {
		return res, err
	}
	if err := r.Setup(ctx); err != nil {
		return res, err
	}
	stored, err := offsets.NewStore(fw).List(ctx, pit.Pool, proj.Name(), proj.Version())
	if err != nil {
		return res, err
	}
	for _, s := range stored {
		if s.Next > 0 {
			return res, fmt.Errorf("projector: replay into %s: the schema already holds a read model (stored offsets): drop %s and %s first", pit.Into, pit.Into, fw)
		}
	}
	var from int64
	if pit.Store != nil {
		// The newest snapshot whose offsets are all at or before the point.
		fits := func(m snapshot.Manifest) bool {
			for part, next := range m.Offsets {
				if next > until[part] {
					return false
				}
			}
			return true
		}
		m, err := snapshot.RestoreNewest(ctx, pit.Store, fits, snapshot.Target{Pool: pit.Pool, Schema: fw, Projection: proj, Topic: pit.Topic,
			LogStart: func(ctx context.Context) (map[int]int64, error) { return logStarts(ctx, kc, pit.Topic) }})
		switch {
		case errors.Is(err, snapshot.ErrNotFound): // none fits: replay from offset zero
		case err != nil:
			return res, err
		default:
			if _, err := forget.Purge(ctx, pit.Pool, proj, pit.Keys, time.Time{}); err != nil {
				return res, err
			}
			res.Snapshot, from = m.ID, m.Events
		}
	}
	res.Replayed = res.Events - from
	if res.Replayed > 0 {
		if pit.Started != nil {
			stop := pit.Started(ctx, r)
			defer stop()
		}
		if err := r.Run(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}
