package projector_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// fixture is one test's slice of the stack: a topic, a framework schema and a
// projection whose schema is dropped at the end.
type fixture struct {
	t      testing.TB
	topic  string
	pool   *pgxpool.Pool
	schema string // the framework schema
	pub    *eventlog.Publisher
}

func newFixture(t testing.TB, partitions int) *fixture {
	t.Helper()
	topic := testenv.Topic(t, partitions)
	pool, schema := testenv.Postgres(t)
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return &fixture{t: t, topic: topic, pool: pool, schema: schema, pub: pub}
}

// projectionName returns a name unique to the test, short enough for a schema.
func (f *fixture) projectionName() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	name := "p" + hex.EncodeToString(b[:])
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for v := 1; v <= 3; v++ {
			_, _ = f.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name + "_v" + string(rune('0'+v))}.Sanitize()+" CASCADE")
		}
	})
	return name
}

func (f *fixture) domainProjection() *readmodel.Projection {
	p, err := domain.NewProjection(f.projectionName(), 1)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) publish(evs ...events.Event) []eventlog.Result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := f.pub.Publish(ctx, evs...)
	if err != nil {
		f.t.Fatalf("publish: %v", err)
	}
	return res
}

func (f *fixture) generate(g *domain.Generator, n int) []events.Event {
	f.t.Helper()
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = g.Next()
	}
	for i := 0; i < n; i += 5000 {
		f.publish(evs[i:min(i+5000, n)]...)
	}
	return evs
}

func (f *fixture) config(p *readmodel.Projection) projector.Config {
	return projector.Config{
		Brokers: testenv.Kafka(f.t), Topic: f.topic, Projection: p, Pool: f.pool, Schema: f.schema,
		GroupID: "g-" + p.Name(), Logger: zaptest.NewLogger(f.t, zaptest.Level(zap.WarnLevel)),
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
		RetryPoll: 200 * time.Millisecond, RetryBackoffMax: time.Second,
	}
}

// start runs a runner until the returned stop is called; stop fails the test if
// Run returned an error. before, given, runs on the runner before it runs.
func (f *fixture) start(cfg projector.Config, before ...func(*projector.Runner)) (*projector.Runner, func()) {
	f.t.Helper()
	r, err := projector.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, fn := range before {
		fn(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				f.t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			f.t.Errorf("Run did not return within 60 s of cancel")
		}
	}
	f.t.Cleanup(stop)
	return r, stop
}

// endOffsets returns each partition's end offset.
func (f *fixture) endOffsets() map[int]int64 {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := eventlog.NewClient(testenv.Kafka(f.t))
	defer c.Close()
	n, err := c.Partitions(ctx, f.topic)
	if err != nil {
		f.t.Fatal(err)
	}
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := c.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{f.topic: reqs}})
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[f.topic] {
		out[po.Partition] = po.LastOffset
	}
	return out
}

// stored returns the stored next offset per partition.
func (f *fixture) stored(p *readmodel.Projection) map[int]int64 {
	f.t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT partition, next_offset FROM `+pgx.Identifier{f.schema, "offsets"}.Sanitize()+`
		WHERE projection = $1 AND version = $2 AND topic = $3`, p.Name(), p.Version(), f.topic)
	if err != nil {
		return nil
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var part int
		var next int64
		if err := rows.Scan(&part, &next); err != nil {
			f.t.Fatal(err)
		}
		out[part] = next
	}
	return out
}

// waitCaughtUp waits until every partition's stored offset reaches its end.
func (f *fixture) waitCaughtUp(p *readmodel.Projection, timeout time.Duration) {
	f.t.Helper()
	end := f.endOffsets()
	testenv.WaitFor(f.t, timeout, "stored offsets to reach the log end", func() bool {
		st := f.stored(p)
		for part, e := range end {
			if e > 0 && st[part] < e {
				return false
			}
		}
		return true
	})
}

// waitStatusAtEnd waits until r's status board has every partition at the log's
// end: the board is updated after a batch commits, so counters read right after
// waitCaughtUp may miss the last batch.
func (f *fixture) waitStatusAtEnd(r *projector.Runner, timeout time.Duration) {
	f.t.Helper()
	end := f.endOffsets()
	testenv.WaitFor(f.t, timeout, "the status board to reach the log end", func() bool {
		next := map[int]int64{}
		for _, ps := range r.Status().Partitions {
			next[ps.Partition] = ps.Next
		}
		for part, e := range end {
			if e > 0 && next[part] < e {
				return false
			}
		}
		return true
	})
}

// logEvents reads the whole topic and decodes it: the oracle's input.
func (f *fixture) logEvents() []events.Event {
	f.t.Helper()
	var out []events.Event
	for _, m := range testenv.ReadAll(f.t, f.topic) {
		e, err := eventlog.FromMessage(m)
		if err != nil {
			continue // undecodable events are the projector's to park, not the fold's
		}
		out = append(out, e)
	}
	return out
}

// assertEqualsFold compares the projection's tables with the fold of the log.
func (f *fixture) assertEqualsFold(p *readmodel.Projection) {
	f.t.Helper()
	want, err := domain.Fold(domain.Registry(), f.logEvents())
	if err != nil {
		f.t.Fatal(err)
	}
	got, err := domain.Load(context.Background(), f.pool, p.Schema())
	if err != nil {
		f.t.Fatal(err)
	}
	if d := domain.Diff(want, got, 10); d != "" {
		f.t.Fatalf("read model differs from the fold of the log (%d users, %d articles): %s", len(want.Users), len(want.Articles), d)
	}
	f.t.Logf("read model equals the fold: %d users, %d articles", len(want.Users), len(want.Articles))
}

// watchOffsets samples the stored offsets until the returned stop is called, and
// fails the test if any partition's offset ever went back.
func (f *fixture) watchOffsets(p *readmodel.Projection) (stop func()) {
	f.t.Helper()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		last := map[int]int64{}
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for part, n := range f.stored(p) {
				if n < last[part] {
					f.t.Errorf("partition %d: stored offset went back from %d to %d", part, last[part], n)
				}
				last[part] = n
			}
		}
	}()
	return func() { close(done); <-finished }
}
