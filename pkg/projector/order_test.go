package projector_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/projector"
)

// An event whose sequence is not ahead of its aggregate's is a duplicate only when
// its id was applied: 1, 3, 2 with new ids loses nothing, a copy of an applied event
// landing late is skipped, a second writer's event claiming a sequence parks, and
// gaps and stale sequences are counted once per event however often the batch is
// retried.
func TestStaleSequencesAreAppliedOrParkedNeverDropped(t *testing.T) {
	t.Parallel()
	for _, halt := range []bool{false, true} {
		f := newFixture(t, 1)
		conflict := note(t, "c", 1, false)
		conflict.ID = "c-1-second-writer"
		f.publish(
			note(t, "s", 1, false), note(t, "s", 3, false), note(t, "s", 2, false), // a swap, new ids
			note(t, "s", 2, false), note(t, "s", 3, false), // late copies of applied events (same ids)
			note(t, "s", 4, false),
			note(t, "c", 1, false), conflict, // two writers claim one sequence
			note(t, "bad", 1, true), // fails once, so the batch is retried event by event
		)
		var failing atomic.Bool
		failing.Store(true)
		p := notesProjection(t, f, &failing)
		cfg := f.config(p)
		reg := prometheus.NewRegistry()
		cfg.Registerer = reg
		if halt {
			cfg.Gaps = projector.GapHalt
		}
		r, _ := f.start(cfg)
		f.waitCaughtUp(p, time.Minute)
		f.waitStatusAtEnd(r, 10*time.Second)
		got := appliedSeqs(t, f, p)
		parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		var dups int64
		for _, ps := range r.Status().Partitions {
			dups += ps.Duplicates
		}
		gaps, stale := counter(t, reg, "projector_sequence_gaps_total"), counter(t, reg, "projector_sequence_stale_total")
		if !halt {
			if !equal(got["s"], []int64{1, 3, 2, 4}) || !equal(got["c"], []int64{1}) || dups != 2 {
				t.Fatalf("warn: applied %v, duplicates %d: want s 1,3,2,4 and c 1 applied, the two copies skipped", got, dups)
			}
			if len(parked) != 2 || parked[0].Subject != "c" || parked[1].Subject != "bad" ||
				!strings.Contains(parked[0].Error, `sequence conflict: aggregate "c" applied event c-1 at sequence 1; event c-1-second-writer claims the same sequence`) {
				t.Fatalf("warn: parked %+v, want the second writer's event and the failing one", parked)
			}
			if gaps != 1 || stale != 2 {
				t.Fatalf("warn: gaps %v, stale %v: want 1 and 2, once per event", gaps, stale)
			}
			continue
		}
		if !equal(got["s"], []int64{1}) || !equal(got["c"], []int64{1}) || dups != 0 {
			t.Fatalf("halt: applied %v, duplicates %d", got, dups)
		}
		var reasons []string
		for _, pk := range parked {
			reasons = append(reasons, pk.Subject+": "+pk.Error)
		}
		all := strings.Join(reasons, "\n")
		// s: the gap (3), and 2, the copies and 4 behind it; c: the conflict; bad.
		if len(parked) != 7 || !strings.Contains(all, "sequence gap: expected 2, got 3") ||
			!strings.Contains(all, `sequence conflict: aggregate "c" applied event c-1 at sequence 1; event c-1-second-writer claims the same sequence`) {
			t.Fatalf("halt: parked %d:\n%s", len(parked), all)
		}
		if gaps != 1 || stale != 1 {
			t.Fatalf("halt: gaps %v, stale %v: want 1 and 1", gaps, stale)
		}
	}
}

// The window of an aggregate's last applied events survives its column: a runner
// that starts after another stored it proves late copies of events that are not
// the aggregate's last (only the window holds their ids) to be duplicates, and
// skips them.
func TestAStoredWindowProvesLateCopiesToTheNextRunner(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var failing atomic.Bool
	p := notesProjection(t, f, &failing)
	f.publish(note(t, "s", 1, false), note(t, "s", 2, false), note(t, "s", 3, false), note(t, "s", 4, false), note(t, "s", 5, false))
	_, stop := f.start(f.config(p))
	f.waitCaughtUp(p, time.Minute)
	stop()

	f.publish(note(t, "s", 2, false), note(t, "s", 4, false), note(t, "s", 6, false)) // copies of 2 and 4, then 6
	r, _ := f.start(f.config(p))
	f.waitCaughtUp(p, time.Minute)
	f.waitStatusAtEnd(r, 10*time.Second)
	var dups int64
	for _, ps := range r.Status().Partitions {
		dups += ps.Duplicates
	}
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := appliedSeqs(t, f, p); !equal(got["s"], []int64{1, 2, 3, 4, 5, 6}) || dups != 2 || len(parked) != 0 {
		t.Fatalf("applied %v, %d duplicates, %d parked: want 1 to 6 applied once, the copies of 2 and 4 skipped, none parked", got, dups, len(parked))
	}
}
