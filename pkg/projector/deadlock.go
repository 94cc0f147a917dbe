package projector

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/deadlock"
	"github.com/projector/projector/internal/retry"
)

// applySplitting applies msgs with applyBatch, in halves when they deadlock (see
// package internal/deadlock). Each deadlock is counted (this process's metric and
// status, and the partition's stored count, which status reports over every
// instance and restart) and logged; the backoff is
// RetryBackoffMin doubled per split or attempt, at most RetryBackoffMax, plus
// jitter (which tends to break the tie with the other transaction).
func (r *Runner) applySplitting(ctx context.Context, p *partition, msgs []kafka.Message) error {
	return deadlock.Splitter[kafka.Message]{
		Apply:   func(ctx context.Context, batch []kafka.Message) error { return r.applyBatch(ctx, p, batch) },
		Backoff: retry.Policy{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax},
		Deadlocked: func(batch []kafka.Message, try int, wait time.Duration, err error) {
			r.metrics.Deadlocks.Inc()
			r.status.Deadlocked()
			r.storeDeadlock(ctx, p)
			p.Status.Set(func(s *PartitionStatus) {
				s.Deadlocks++
				s.Waiting = fmt.Sprintf("a deadlock: retrying %d events in halves", len(batch))
			})
			p.Log.Warn("deadlock: the batch's transaction was chosen as the victim; retrying it in halves",
				zap.Int64("from", batch[0].Offset), zap.Int64("to", batch[len(batch)-1].Offset), zap.Int("events", len(batch)),
				zap.Int("attempt", try), zap.Duration("backoff", wait), zap.Error(err))
		},
		Recovered: func() { p.Status.Set(func(s *PartitionStatus) { s.Waiting = "" }) },
	}.Run(ctx, msgs)
}
