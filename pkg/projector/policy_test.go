package projector_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
)

func TestGapAndUnknownTypePolicies(t *testing.T) {
	t.Parallel()
	for _, strict := range []bool{false, true} {
		f := newFixture(t, 1)
		var never atomic.Bool
		p := notesProjection(t, f, &never)
		mystery := events.Event{ID: "m-1", Source: "t", Type: "Mystery", Subject: "m", Sequence: 1, Data: []byte(`{}`)}
		f.publish(note(t, "g", 1, false), note(t, "g", 3, false), note(t, "g", 4, false), mystery, note(t, "m", 2, false))
		cfg := f.config(p)
		if strict {
			cfg.Gaps, cfg.Unknown = projector.GapHalt, projector.UnknownPark
		}
		f.start(cfg)
		f.waitCaughtUp(p, time.Minute)
		got := appliedSeqs(t, f, p)
		parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if !strict {
			// warn: the gap is applied; skip: the unknown event is ignored, but its
			// sequence counts, so m's next event is no gap.
			if !equal(got["g"], []int64{1, 3, 4}) || !equal(got["m"], []int64{2}) || len(parked) != 0 {
				t.Fatalf("lenient: applied %v, parked %v", got, parked)
			}
			continue
		}
		if !equal(got["g"], []int64{1}) || len(got["m"]) != 0 || len(parked) != 4 {
			t.Fatalf("strict: applied %v, parked %d: %+v", got, len(parked), parked)
		}
		reasons := parked[0].Error + " | " + parked[2].Error
		if !strings.Contains(reasons, "sequence gap: expected 2, got 3") || !strings.Contains(reasons, "unknown event type") {
			t.Fatalf("strict: parked for %q", reasons)
		}
	}
}

func TestKafkaGroupOffsetsAreAnAdvisoryCopy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	var never atomic.Bool
	p := notesProjection(t, f, &never)
	for i := uint64(1); i <= 50; i++ {
		f.publish(note(t, "a", i, false), note(t, "b", i, false), note(t, "c", i, false))
	}
	cfg := f.config(p)
	cfg.CommitInterval = 200 * time.Millisecond
	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stored := f.stored(p)
	client := testenv.KafkaClient(t)
	testenv.WaitFor(t, 30*time.Second, "the group's committed offsets to match the stored ones", func() bool {
		resp, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: cfg.GroupID,
			Topics: map[string][]int{f.topic: {0, 1}}})
		if err != nil {
			return false
		}
		for _, po := range resp.Topics[f.topic] {
			want := stored[po.Partition]
			if want == 0 {
				want = -1 // nothing to commit: the group has no offset for it
			}
			if po.CommittedOffset != want {
				return false
			}
		}
		return true
	})
}

// Under GapHalt an aggregate written out of order parks at the gap; a retry applies
// its events in sequence order. A poison event an operator gives up on is skipped,
// and the events behind it go on.
func TestRetryOrdersBySequenceAndSkipReleasesAnAggregate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var never atomic.Bool
	never.Store(true)
	p := notesProjection(t, f, &never)
	f.publish(note(t, "g", 1, false), note(t, "g", 3, false), note(t, "g", 2, false), note(t, "g", 4, false),
		note(t, "h", 1, false), note(t, "h", 2, true), note(t, "h", 3, false))
	cfg := f.config(p)
	cfg.Gaps = projector.GapHalt
	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	dlq := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version())
	parked, err := dlq.List(context.Background(), false)
	if err != nil || len(parked) != 5 {
		t.Fatalf("parked %+v %v, want 5: g's gap and two behind it, h's poison and one behind it", parked, err)
	}
	var poison int64
	for _, pk := range parked {
		if pk.Subject == "h" && pk.Behind == nil {
			poison = pk.ID
		}
	}
	if n, err := dlq.RequestSkip(context.Background(), []int64{poison}); err != nil || n != 1 {
		t.Fatalf("skip: %d %v", n, err)
	}
	if n, err := dlq.RequestRetry(context.Background(), nil); err != nil || n != 4 {
		t.Fatalf("retry: %d %v", n, err)
	}
	testenv.WaitFor(t, 30*time.Second, "the aggregates to drain", func() bool {
		ps, err := dlq.List(context.Background(), false)
		return err == nil && len(ps) == 0
	})
	got := appliedSeqs(t, f, p)
	if !equal(got["g"], []int64{1, 2, 3, 4}) || !equal(got["h"], []int64{1, 3}) {
		t.Fatalf("applied %v, want g 1-4 in sequence order and h 1, 3 (2 skipped)", got)
	}
}
