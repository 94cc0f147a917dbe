package deadlock_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector/projector/internal/deadlock"
	"github.com/projector/projector/internal/retry"
)

var victim = &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}

type tries struct {
	applied    [][]int
	deadlocks  []string // "batch@try+wait"
	recovered  int
	backoff    retry.Policy
	deadlockOn func(batch []int) bool
}

func (tr *tries) splitter() deadlock.Splitter[int] {
	return deadlock.Splitter[int]{
		Apply: func(_ context.Context, batch []int) error {
			if tr.deadlockOn(batch) {
				return deadlock.Mark(fmt.Errorf("apply: %w", victim))
			}
			tr.applied = append(tr.applied, batch)
			return nil
		},
		Backoff: tr.backoff,
		Deadlocked: func(batch []int, try int, wait time.Duration, err error) {
			if !deadlock.Is(err) {
				panic(fmt.Sprintf("told of %v, not the deadlock", err))
			}
			tr.deadlocks = append(tr.deadlocks, fmt.Sprintf("%v@%d+%v", batch, try, wait))
		},
		Recovered: func() { tr.recovered++ },
	}
}

// A batch that deadlocks is applied in halves, in order, each half splitting again
// while it deadlocks, with a backoff that doubles per split.
func TestSplitAppliesHalvesInOrder(t *testing.T) {
	t.Parallel()
	tr := &tries{backoff: retry.Policy{Min: time.Millisecond, Max: 8 * time.Millisecond, NoJitter: true},
		deadlockOn: func(batch []int) bool { return len(batch) > 2 }}
	if err := tr.splitter().Run(context.Background(), []int{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	if want := [][]int{{1, 2}, {3, 4}, {5, 6}, {7, 8}}; !reflect.DeepEqual(tr.applied, want) {
		t.Fatalf("applied %v, want %v", tr.applied, want)
	}
	want := []string{"[1 2 3 4 5 6 7 8]@1+1ms", "[1 2 3 4]@2+2ms", "[5 6 7 8]@2+2ms"}
	if !reflect.DeepEqual(tr.deadlocks, want) {
		t.Fatalf("deadlocks %v, want %v", tr.deadlocks, want)
	}
	if tr.recovered != 4 {
		t.Fatalf("%d recoveries told, want 4 (each half applied after a split)", tr.recovered)
	}
}

// A single event that deadlocks is retried alone, waiting longer each time; an
// error that is not a deadlock is returned at once.
func TestSplitRetriesOneAloneAndReturnsOtherErrors(t *testing.T) {
	t.Parallel()
	left := 2
	tr := &tries{backoff: retry.Policy{Min: time.Millisecond, Max: time.Second, NoJitter: true},
		deadlockOn: func([]int) bool { left--; return left >= 0 }}
	if err := tr.splitter().Run(context.Background(), []int{9}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"[9]@1+1ms", "[9]@2+2ms"}; !reflect.DeepEqual(tr.applied, [][]int{{9}}) || !reflect.DeepEqual(tr.deadlocks, want) || tr.recovered != 1 {
		t.Fatalf("applied %v, deadlocks %v (want %v), %d recoveries", tr.applied, tr.deadlocks, want, tr.recovered)
	}

	boom := errors.New("boom")
	s := tr.splitter()
	s.Apply = func(context.Context, []int) error { return deadlock.Mark(boom) }
	if err := s.Run(context.Background(), []int{1, 2}); !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want boom at once", err)
	}
	if len(tr.deadlocks) != 2 {
		t.Fatalf("a plain error was told as a deadlock: %v", tr.deadlocks)
	}
}

// Waiting before a retry ends with the context.
func TestSplitStopsWithItsContext(t *testing.T) {
	t.Parallel()
	tr := &tries{backoff: retry.Policy{Min: time.Hour, Max: time.Hour}, deadlockOn: func([]int) bool { return true }}
	ctx, cancel := context.WithCancel(context.Background())
	s := tr.splitter()
	s.Deadlocked = func([]int, int, time.Duration, error) { cancel() }
	if err := s.Run(ctx, []int{1, 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want the context's error", err)
	}
}
