package projector

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/deadlock"
	"github.com/projector/projector/internal/effects"
	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/offsets"
)

// partition is one worker's state: what it owns and where it stands.
type partition struct {
	lane.Lane                  // its key, owner, position (Next), status row and logger
	parked    map[string]int64 // subjects with parked events -> first parked offset
	layout    *eventlog.Layout // the topic's partitioning history, to find misrouted records
	fx        *effects.Feed    // where committed batches go to the partition's effects; nil without effects
	verified  time.Time        // when an idle look last compared the stored position with Next
	plainTo   int64            // after a fold failed: the offset up to which reads apply batch by batch
}

// verifyEvery is how often an idle partition compares its stored position with
// the one it committed (see Runner.idle).
const verifyEvery = time.Second

// ErrHistoryGone is returned when a stored offset lies below the partition's first
// offset: events the read model never saw were deleted from the log.
var ErrHistoryGone = errors.New("stored offset is below the log start: events were deleted before this read model applied them")

// work runs one partition's read model for one generation: claim, read, apply,
// until the generation ends (ctx) or the partition is fenced, handing each committed
// batch to feed (nil: no effects). A nil return means the generation ended.
func (r *Runner) work(ctx context.Context, gen *kafka.Generation, part int, feed *effects.Feed) error {
	p := &partition{Lane: lane.Lane{
		Key:    offsets.Key{Projection: r.cfg.Projection.Name(), Version: r.cfg.Projection.Version(), Topic: r.cfg.Topic, Partition: part},
		Owner:  offsets.Owner{Generation: gen.ID, Member: gen.MemberID},
		Status: r.status.Partition(part),
		Log:    r.log.With(zap.Int("partition", part), zap.Int32("generation", gen.ID)),
	}, fx: feed}
	p.Status.Set(func(s *PartitionStatus) { s.State = StateClaiming })
	defer p.Status.Set(func(s *PartitionStatus) { s.State = StateReleased })

	if err := r.takeOver(ctx, p, gen.ID); err != nil {
		return err
	}
	rd := r.env.NewReader(&p.Lane)
	defer rd.Close()

	lastRetryPoll, lastTouch := time.Now(), time.Now()
	for {
		if r.cfg.StopAt != nil && p.Next >= r.cfg.StopAt[part] {
			if err := r.waitAtStop(ctx, p, rd); err != nil || ctx.Err() != nil {
				return err
			}
			continue
		}
		msgs, err := rd.ReadBatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			continue // the reader logged it and starts over at p.Next
		}
		kept, err := r.keep(ctx, p, msgs)
		if err != nil {
			return err
		}
		if len(kept) > 0 {
			lastTouch = time.Now()
			apply := r.applySplitting
			if r.folds(p, kept) && r.takeFoldSlot() {
				apply = func(ctx context.Context, p *partition, msgs []kafka.Message) error {
					defer r.giveFoldSlot()
					return r.applyFolding(ctx, p, rd, msgs)
				}
			}
			if err := apply(ctx, p, kept); err != nil {
				return err
			}
		} else if len(msgs) == 0 {
			if err := r.idle(ctx, p, &lastTouch); err != nil {
				return err
			}
		}
		if time.Since(lastRetryPoll) >= r.cfg.RetryPoll {
			lastRetryPoll = time.Now()
			if err := r.retryParked(ctx, p); err != nil {
				return err
			}
		}
	}
}

// takeOver claims the partition, loads its parked aggregates and checks its
// stored position against the log before the worker reads.
func (r *Runner) takeOver(ctx context.Context, p *partition, gen int32) error {
	if err := r.env.Claim(ctx, &p.Lane); err != nil {
		return err
	}
	p.fx.Claimed(p.Next)
	if err := r.retry(ctx, p, "load parked", func(ctx context.Context) error { return r.loadParked(ctx, p) }); err != nil {
		return err
	}
	first, last, err := r.bounds(ctx, p.Key.Partition)
	if err != nil {
		return err
	}
	if err := checkBounds(p.Key.Partition, p.Next, first, last); err != nil {
		return err
	}
	if p.layout, err = r.layout(ctx, gen); err != nil {
		return err
	}
	p.Status.Set(func(s *PartitionStatus) {
		s.Next, s.HighWater = p.Next, last
		s.Lag = max(0, last-p.Next)
		s.State = StateReplaying
		if s.Lag <= r.readyLag {
			s.State = StateLive
		}
	})
	p.Log.Info("partition claimed", zap.Int64("next_offset", p.Next), zap.Int64("high_water", last), zap.Int("parked_aggregates", len(p.parked)))

	return nil
}

// keep returns the messages of a read to apply: a reader may hand back records
// below the stored position (kafka-go #1398 after a rebalance, or a resync after an
// unknown commit), or past a bounded run's end, which it drops. A first record
// beyond the position is refused unless the log still holds the position: kafka-go
// moves to the log start by itself on "offset out of range", and events are never
// skipped silently.
func (r *Runner) keep(ctx context.Context, p *partition, msgs []kafka.Message) ([]kafka.Message, error) {
	return r.keepFrom(ctx, p, p.Next, msgs)
}

// keepFrom is keep for a read that must start at next (a fold's reads after its
// first start where the one before ended).
func (r *Runner) keepFrom(ctx context.Context, p *partition, next int64, msgs []kafka.Message) ([]kafka.Message, error) {
	part := p.Key.Partition
	kept := msgs[:0]
	for _, m := range msgs {
		if m.Offset >= next && !r.beyondStop(part, m.Offset) {
			kept = append(kept, m)
		}
	}
	if len(kept) > 0 && kept[0].Offset > next {
		first, last, err := r.bounds(ctx, part)
		if err != nil {
			return nil, err
		}
		if err := checkBounds(part, next, first, last); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// idle records a read that found nothing: the partition is at its end. An idle
// owner keeps its claim fresh, so it is never taken for stale.
func (r *Runner) idle(ctx context.Context, p *partition, lastTouch *time.Time) error {
	p.Status.Idle(p.Next)
	r.observePartition(p)
	if !r.cfg.SyncCommit && time.Since(p.verified) >= verifyEvery {
		// Batches commit without waiting for the disk: a PostgreSQL crash may have
		// lost the last ones, which a partition with nothing to write would not see.
		p.verified = time.Now()
		if err := r.env.Verify(ctx, &p.Lane); err != nil {
			return err
		}
	}
	if time.Since(*lastTouch) < r.offsets.StaleClaimAfter/4 {
		return nil
	}
	*lastTouch = time.Now()
	return r.env.Touch(ctx, &p.Lane)
}

// waitAtStop is a bounded run's partition that got to its end: it reads no further
// (it read, and dropped, the rest of the log, a core's worth while other partitions
// and the effects caught up) and waits, its claim kept fresh, for the run to end.
func (r *Runner) waitAtStop(ctx context.Context, p *partition, rd *lane.Reader) error {
	rd.Close()
	t := time.NewTimer(r.offsets.StaleClaimAfter / 4)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil // the run ended
	case <-t.C:
	}
	return r.env.Touch(ctx, &p.Lane)
}

// beyondStop reports whether offset lies past a bounded run's end.
func (r *Runner) beyondStop(part int, offset int64) bool {
	if r.cfg.StopAt == nil {
		return false
	}
	return offset >= r.cfg.StopAt[part]
}

// checkBounds refuses a stored position outside the partition: below its start
// (events deleted before they were applied) or beyond its end (the topic was
// deleted and created anew).
func checkBounds(part int, next, first, last int64) error {
	if next < first {
		return fmt.Errorf("partition %d: stored offset %d, log starts at %d: %w", part, next, first, ErrHistoryGone)
	}
	if next > last {
		return fmt.Errorf("partition %d: stored offset %d is beyond the log end %d: was the topic deleted and created again? %w",
			part, next, last, ErrHistoryGone)
	}
	return nil
}

// applyBatch applies msgs in one transaction, retrying transient failures with
// backoff until it succeeds or the partition is lost. An in-flight batch is given
// DrainTimeout to finish when the generation ends.
func (r *Runner) applyBatch(genCtx context.Context, p *partition, msgs []kafka.Message) error {
	start, from := time.Now(), p.Next
	ctx, cancel := lane.DrainContext(genCtx, r.cfg.DrainTimeout)
	defer cancel()
	var entries []judge.Entry
	if err := r.retry(ctx, p, "read personal data keys", func(ctx context.Context) error {
		var err error
		entries, err = r.prepare(ctx, msgs)
		return err
	}); err != nil {
		return err
	}
	var out outcome
	careful, resynced := false, false
	known := map[int64]error{} // events found poisonous where a rollback could not isolate them
	err := r.retry(ctx, p, "apply batch", func(ctx context.Context) error {
		var err error
		out, err = r.applyOnce(ctx, p, entries, careful, known)
		if errors.Is(err, errCareful) {
			careful = true
			p.Log.Info("a write failed; applying the batch event by event to park the failing events",
				zap.Int64("from", msgs[0].Offset), zap.Int64("to", msgs[len(msgs)-1].Offset))
			out, err = r.applyOnce(ctx, p, entries, true, known)
		}
		for {
			var pe *poisonError
			if !errors.As(err, &pe) || known[pe.offset] != nil {
				break
			}
			known[pe.offset] = pe.err
			out, err = r.applyOnce(ctx, p, entries, true, known)
		}
		if errors.Is(err, offsets.ErrFenced) {
			ok, rerr := r.resync(ctx, p, msgs[len(msgs)-1].Offset+1)
			if ok {
				resynced = true // a previous attempt committed: not fenced
			}
			return rerr
		}
		return deadlock.Mark(err) // not retried whole: applySplitting splits it
	})
	if err != nil {
		return err
	}
	if resynced { // the stored position already covers the batch
		r.publish(ctx, p, from, nil)
		p.Status.Committed(outcome{}.batch(p.Next, msgs[len(msgs)-1].HighWaterMark), r.readyLag, p.Log)
		return r.retry(ctx, p, "load parked", func(ctx context.Context) error { return r.loadParked(ctx, p) })
	}
	last := msgs[len(msgs)-1]
	r.committed(genCtx, ctx, p, committedBatch{from: from, next: last.Offset + 1, highWater: last.HighWaterMark, start: start,
		out: out, flagged: entries, effects: entries, types: appliedTypes(entries)})
	return nil
}

// committedBatch is what a committed transaction did, for committed.
type committedBatch struct {
	from, next, highWater int64 // the position it moved from and to; the high-water mark its last read saw
	start                 time.Time
	out                   outcome
	flagged               []judge.Entry    // its events, or those of them parked or applied out of order
	effects               []judge.Entry    // its events for the effects; nil: they read them from the log
	passed                *effects.Span    // a fold's: what its events were, for effects that may pass them unread
	types                 iter.Seq[string] // the types it applied
}

// committed records a committed transaction: the partition's parked aggregates,
// position, status, metrics and logs, and hands it to the effects, scrubs and
// snapshots.
func (r *Runner) committed(genCtx, ctx context.Context, p *partition, b committedBatch) {
	for s, off := range b.out.parkedSubjects {
		if _, ok := p.parked[s]; !ok {
			p.parked[s] = off
		}
	}
	for i := range b.flagged {
		if e := &b.flagged[i]; e.Act == judge.Park && e.Behind < 0 {
			p.Log.Warn("parked an event", zap.Int64("offset", e.Msg.Offset), zap.String("subject", e.Subject()),
				zap.String("event_id", e.Event.ID), zap.String("type", e.Event.Type), zap.String("error", e.Reason))
		}
	}
	r.report(p, b.flagged)
	p.Next = b.next
	out := b.out
	r.metrics.Observe(out.applied, out.duplicates, out.ignored, out.parked, time.Since(b.start))
	p.Status.Committed(out.batch(p.Next, b.highWater), r.readyLag, p.Log)
	if b.passed != nil && p.fx != nil {
		p.fx.Passed(*b.passed) // committed: the effects may pass it, or read it from the log
	} else {
		r.publish(ctx, p, b.from, b.effects) // committed: the effects may run
	}
	r.observePartition(p)
	if r.scrubs != nil {
		r.scrubs.Saw(b.types)
	}
	if r.snaps != nil {
		r.snaps.AfterBatch(genCtx, b.types)
	}
}

// observePartition updates the partition's gauges from its status.
func (r *Runner) observePartition(p *partition) {
	s := p.Status.Get()
	lag, next := s.Lag, s.Next
	part := strconv.Itoa(p.Key.Partition)
	r.metrics.Lag.WithLabelValues(part).Set(float64(lag))
	r.metrics.Offset.WithLabelValues(part).Set(float64(next))
}

// resync handles a compare-and-set that failed (see lane.Env.Resync).
func (r *Runner) resync(ctx context.Context, p *partition, target int64) (bool, error) {
	return r.env.Resync(ctx, &p.Lane, target)
}

// retry runs fn until it succeeds, returning at once on a permanent error, on
// fencing, or when ctx ends (see lane.Env.Do: the one retry policy).
func (r *Runner) retry(ctx context.Context, p *partition, what string, fn func(context.Context) error) error {
	return r.env.Do(ctx, &p.Lane, what, fn)
}

// layout returns the topic's partitioning history, read once per generation (a
// partition-count change starts a new one), retrying until it is read or ctx ends.
func (r *Runner) layout(ctx context.Context, gen int32) (*eventlog.Layout, error) {
	r.layoutMu.Lock()
	defer r.layoutMu.Unlock()
	if r.layoutGen == gen && r.topicLayout != nil {
		return r.topicLayout, nil
	}
	l, err := r.env.Layout(ctx)
	if err != nil {
		return nil, err
	}
	r.topicLayout, r.layoutGen = &l, gen
	return &l, nil
}

// bounds returns a partition's first offset and its end (the high-water mark).
func (r *Runner) bounds(ctx context.Context, part int) (first, last int64, err error) {
	return r.env.Bounds(ctx, part)
}
