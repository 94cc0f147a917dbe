package projector_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/events"
)

func TestReplayFromZeroThenLiveEqualsFold(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 6)
	gen, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 11, Users: 300})
	if err != nil {
		t.Fatal(err)
	}
	history := f.generate(gen, 20000)

	p := f.domainProjection()
	r, _ := f.start(f.config(p))

	// Events that arrive while the replay runs are simply part of the log.
	live := f.generate(gen, 5000)
	// kafka-go can land a retried write twice: the same events again, at new offsets.
	f.publish(history[100:300]...)
	f.publish(live[:50]...)
	more := f.generate(gen, 1000)
	_ = more

	f.waitCaughtUp(p, 2*time.Minute)
	f.assertEqualsFold(p)
	testenv.WaitFor(t, 10*time.Second, "readiness", r.Ready)
	st := r.Status()
	var dups int64
	for _, ps := range st.Partitions {
		dups += ps.Duplicates
		if ps.State != "live" || ps.Lag != 0 {
			t.Errorf("partition %d: %s, lag %d", ps.Partition, ps.State, ps.Lag)
		}
	}
	// A copy within the aggregate's last events is a proven duplicate; one that lands
	// further behind cannot be proven either way and parks, without holding its
	// aggregate. Nothing is dropped unrecorded.
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, pk := range parked {
		if !strings.HasPrefix(pk.Error, "stale sequence:") {
			t.Errorf("parked for %q", pk.Error)
		}
	}
	if dups+int64(len(parked)) != 250 || dups < 50 {
		t.Errorf("duplicates counted %d and %d parked, want the 250 republished, the 50 copied at once among the duplicates", dups, len(parked))
	}
}

func TestDuplicateWithoutSequenceAppliedOncePerID(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	reg := domain.Registry()
	mk := func(v any, subject string) events.Event {
		e, err := reg.New("t", subject, v)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	reg1 := mk(domain.UserRegistered{UserID: "u1", Email: "u1@example.test", Name: "U"}, "u1")
	art := mk(domain.UserPublishedAnArticle{UserID: "u1", ArticleID: "a1", Title: "T", Body: "B"}, "u1")
	f.publish(reg1, art, art, art) // no sequences: deduplicated by id
	p := f.domainProjection()
	f.start(f.config(p))
	f.waitCaughtUp(p, time.Minute)
	var count int
	if err := f.pool.QueryRow(context.Background(), `SELECT article_count FROM `+p.Schema()+`.users WHERE user_id = 'u1'`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != 1 {
		t.Fatalf("article_count %d after one article published three times, want 1", count)
	}
}
