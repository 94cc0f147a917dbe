package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/retry"
)

// A batch whose transaction PostgreSQL chose as a deadlock victim (40P01) is not
// retried whole, which could meet the same cycle again and again, but split: its
// halves are applied in order, each in its own transaction, after a jittered
// backoff that grows with each split, and each half splits again if it deadlocks.
// A single event that deadlocks is retried alone with the same backoff. Every
// deadlock is counted (projector_deadlocks_total, Status.Deadlocks and
// PartitionStatus.Deadlocks, this process's; and in the partition's stored position,
// over every instance and restart, which status reports) and logged: nothing loops
// silently.
//
// Handlers on the row API (readmodel.Table) write each table once, in primary-key
// order, so partitions sharing rows wait on each other instead of deadlocking;
// handlers on Exec write in event order and may deadlock.

// deadlockError is a batch lost to a deadlock. It does not unwrap, so that the
// batch's retry loop, which retries transient errors unchanged, returns it at once.
type deadlockError struct{ err error }

func (e *deadlockError) Error() string { return "deadlock: " + e.err.Error() }

// isDeadlock reports whether err is PostgreSQL's deadlock_detected.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// splitOnDeadlock marks a deadlock for applySplitting; other errors pass.
func splitOnDeadlock(err error) error {
	if err != nil && isDeadlock(err) {
		return &deadlockError{err: err}
	}
	return err
}

// applySplitting applies msgs with applyBatch, in halves when they deadlock.
func (r *Runner) applySplitting(ctx context.Context, p *partition, msgs []kafka.Message) error {
	return r.applyHalves(ctx, p, msgs, 0)
}

func (r *Runner) applyHalves(ctx context.Context, p *partition, msgs []kafka.Message, depth int) error {
	for attempt := depth; ; attempt++ {
		err := r.applyBatch(ctx, p, msgs)
		var dl *deadlockError
		if !errors.As(err, &dl) {
			if err == nil && attempt > 0 {
				p.Status.Set(func(s *PartitionStatus) { s.Waiting = "" })
			}
			return err
		}
		wait := r.deadlocked(p, msgs, dl, attempt)
		r.storeDeadlock(ctx, p)
		if err := retry.Sleep(ctx, wait); err != nil {
			return err
		}
		if len(msgs) > 1 {
			h := len(msgs) / 2
			if err := r.applyHalves(ctx, p, msgs[:h], attempt+1); err != nil {
				return err
			}
			return r.applyHalves(ctx, p, msgs[h:], attempt+1)
		}
	}
}

// deadlocked counts and logs a deadlock and returns the backoff before the retry:
// RetryBackoffMin doubled per split or attempt, at most RetryBackoffMax, plus jitter
// (which tends to break the tie with the other transaction).
func (r *Runner) deadlocked(p *partition, msgs []kafka.Message, dl *deadlockError, attempt int) time.Duration {
	r.metrics.Deadlocks.Inc()
	r.status.Deadlocked()
	p.Status.Set(func(s *PartitionStatus) {
		s.Deadlocks++
		s.Waiting = fmt.Sprintf("a deadlock: retrying %d events in halves", len(msgs))
	})
	backoff := retry.Policy{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax}.Wait(attempt + 1)
	p.Log.Warn("deadlock: the batch's transaction was chosen as the victim; retrying it in halves",
		zap.Int64("from", msgs[0].Offset), zap.Int64("to", msgs[len(msgs)-1].Offset), zap.Int("events", len(msgs)),
		zap.Int("attempt", attempt+1), zap.Duration("backoff", backoff), zap.Error(dl.err))
	return backoff
}
