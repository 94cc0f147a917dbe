// Package deadlock is how the runtime (package projector) applies a batch whose
// transaction PostgreSQL chose as a deadlock victim (40P01): not retried whole,
// which could meet the same cycle again and again, but split. Its halves are
// applied in order, each in its own transaction, after a jittered backoff that
// grows with each split, and each half splits again if it deadlocks. A single event
// that deadlocks is retried alone with the same backoff. Every deadlock is told to
// the caller (Splitter.Deadlocked), which counts it (projector_deadlocks_total,
// Status.Deadlocks and PartitionStatus.Deadlocks) and logs it: nothing loops
// silently.
//
// Handlers on the row API (readmodel.Table) write each table once, in primary-key
// order, so partitions sharing rows wait on each other instead of deadlocking;
// handlers on Exec write in event order and may deadlock.
//
// # The cut
//
// Package projector applies a batch in one transaction (its applyBatch), marks a
// deadlock with Mark, and applies every batch through a Splitter; what a batch
// is, how it is applied, counted and logged stays there. The splitting, the
// backoff between the tries and the test for 40P01 live here, and are tested
// without PostgreSQL.
package deadlock

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector/projector/internal/retry"
)

// Error is a batch lost to a deadlock. It does not unwrap, so that the batch's
// retry loop, which retries transient errors unchanged, returns it at once.
type Error struct{ Err error }

func (e *Error) Error() string { return "deadlock: " + e.Err.Error() }

// Is reports whether err is PostgreSQL's deadlock_detected (40P01).
func Is(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// Mark marks a deadlock for a Splitter (an *Error); other errors pass unchanged.
func Mark(err error) error {
	if err != nil && Is(err) {
		return &Error{Err: err}
	}
	return err
}

// Splitter applies batches, in halves when they deadlock.
type Splitter[T any] struct {
	// Apply applies one batch in one transaction; an error Mark made is a deadlock.
	Apply func(ctx context.Context, batch []T) error
	// Backoff is the wait before each retry: Backoff.Wait(n) before the nth retry of
	// a batch, counting the splits above it.
	Backoff retry.Policy
	// Deadlocked is told of each deadlock before the wait: the batch lost, which
	// try it was (1 for the first), the wait and the deadlock's error.
	Deadlocked func(batch []T, try int, wait time.Duration, err error)
	// Recovered is told when a batch applies after a deadlock (optional).
	Recovered func()
}

// Run applies batch with Apply: on a deadlock it waits, then applies each half in
// order the same way (a single element is retried alone). It returns Apply's first
// other error, or ctx's while it waits.
func (s Splitter[T]) Run(ctx context.Context, batch []T) error {
	return s.halves(ctx, batch, 0)
}

func (s Splitter[T]) halves(ctx context.Context, batch []T, depth int) error {
	for attempt := depth; ; attempt++ {
		err := s.Apply(ctx, batch)
		var dl *Error
		if !errors.As(err, &dl) {
			if err == nil && attempt > 0 && s.Recovered != nil {
				s.Recovered()
			}
			return err
		}
		wait := s.Backoff.Wait(attempt + 1)
		s.Deadlocked(batch, attempt+1, wait, dl.Err)
		if err := retry.Sleep(ctx, wait); err != nil {
			return err
		}
		if len(batch) > 1 {
			h := len(batch) / 2
			if err := s.halves(ctx, batch[:h], attempt+1); err != nil {
				return err
			}
			return s.halves(ctx, batch[h:], attempt+1)
		}
	}
}
