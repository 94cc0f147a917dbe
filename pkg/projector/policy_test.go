package projector_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
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
		parked, err := projector.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
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
	client := &kafka.Client{Addr: kafka.TCP(testenv.Kafka(t)...), Transport: &kafka.Transport{}}
	waitFor(t, 30*time.Second, "the group's committed offsets to match the stored ones", func() bool {
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
