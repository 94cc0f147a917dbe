package projector

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// loadParked reads which aggregates of the partition have open parked events.
func (r *Runner) loadParked(ctx context.Context, p *partition) error {
	parked, err := r.parking.Holding(ctx, p.Key)
	if err != nil {
		return err
	}
	p.parked = parked
	return nil
}

// retryParked replays the partition's parked events that an operator asked to retry
// (state 'retry'), in offset order, each under a savepoint: an event that now applies
// is resolved; one that fails again stays parked, and so do the later events of its
// aggregate. It runs in the worker, between batches, so it never races the live stream.
func (r *Runner) retryParked(ctx context.Context, p *partition) error {
	var entries []judge.Entry
	var open map[string]int64 // subject -> lowest offset still parked and not asked for
	err := r.retry(ctx, p, "load retries", func(ctx context.Context) error {
		var err error
		entries, open, err = r.loadRetries(ctx, p)
		return err
	})
	if err != nil || len(entries) == 0 {
		return err
	}
	if r.scrubs != nil {
		for i := range entries {
			if entries[i].Event.Type == shred.TypeSubjectForgotten {
				r.scrubs.Arm() // a retried forgetting rewrites the snapshots too
			}
		}
	}
	var resolved, still, held int
	dctx, cancel := lane.DrainContext(ctx, r.cfg.DrainTimeout)
	defer cancel()
	known := map[int64]error{}
	err = r.retry(dctx, p, "retry parked", func(ctx context.Context) error {
		tx, w, st, err := r.begin(ctx, entries)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		r.queueAdvance(w, p, p.Next, 0) // no advance: proves the partition is still ours
		if err := w.Flush(ctx); err != nil {
			return err
		}
		var ready []judge.Entry
		ready, held = r.holdBehind(w, entries, open)
		if _, err := r.walk(ctx, w, p, st, ready, true, true, known); err != nil {
			var pe *poisonError
			if errors.As(err, &pe) {
				known[pe.offset] = pe.err
				return readmodel.Transient(err) // start over at once, parking it
			}
			return err
		}
		r.queueMarks(w, st)
		resolved, still = r.settleRetried(w, ready)
		if err := w.Flush(ctx); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
	if err != nil {
		return err
	}
	r.report(p, entries)
	p.Log.Info("retried parked events", zap.Int("resolved", resolved), zap.Int("still_parked", still+held))
	r.metrics.Resolved.Add(float64(resolved))
	return r.retry(ctx, p, "load parked", func(ctx context.Context) error { return r.loadParked(ctx, p) })
}

// holdBehind queues the retried events behind an older event that stays parked
// back to parked — they are not retried out of order — and returns the others,
// ready to apply, in each aggregate's sequence order, and how many it held.
func (r *Runner) holdBehind(w *readmodel.Writer, entries []judge.Entry, open map[string]int64) (ready []judge.Entry, held int) {
	for i := range entries {
		e := entries[i]
		if off, ok := open[e.Subject()]; ok && off < e.Msg.Offset {
			e.Act, e.Reason, e.Behind = judge.Park, fmt.Sprintf("behind parked event at offset %d", off), off
			r.parking.QueueHeld(w, &e)
			held++
			continue
		}
		ready = append(ready, e)
	}
	for i := range ready {
		ready[i].Act, ready[i].Reason, ready[i].Behind = judge.Apply, "", -1
	}
	judge.OrderBySequence(ready)
	return ready, held
}

// settleRetried queues each retried event's new state: resolved when it applied,
// parked again (with its new reason) when not. It returns how many of each.
func (r *Runner) settleRetried(w *readmodel.Writer, ready []judge.Entry) (resolved, still int) {
	for i := range ready {
		if r.parking.QueueSettled(w, &ready[i]) {
			resolved++
		} else {
			still++
		}
	}
	return resolved, still
}

// applySkips resolves the partition's parked events an operator asked to skip.
func (r *Runner) applySkips(ctx context.Context, p *partition) (int, error) {
	skips, err := r.parking.Skips(ctx, p.Key)
	if err != nil || len(skips) == 0 {
		return 0, err
	}
	tx, err := r.cfg.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	r.queueAdvance(w, p, p.Next, 0) // still ours
	for _, s := range skips {
		r.parking.QueueSkip(w, p.Key, s)
	}
	if err := w.Flush(ctx); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	p.Log.Info("skipped parked events on an operator's request", zap.Int("events", len(skips)))
	return len(skips), nil
}

func (r *Runner) loadRetries(ctx context.Context, p *partition) ([]judge.Entry, map[string]int64, error) {
	// Skips first: an operator's decision not to apply an event at all. A skipped
	// event counts as consumed: its aggregate's sequence moves past it, so the events
	// behind it are not gaps.
	skipped, err := r.applySkips(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	if skipped > 0 {
		if err := r.loadParked(ctx, p); err != nil {
			return nil, nil, err
		}
	}
	msgs, ids, err := r.parking.Retries(ctx, p.Key)
	if err != nil || len(msgs) == 0 {
		return nil, nil, err
	}
	open, err := r.parking.StillParked(ctx, p.Key)
	if err != nil {
		return nil, nil, err
	}
	entries, err := r.prepare(ctx, msgs)
	if err != nil {
		return nil, nil, err
	}
	for i := range entries {
		entries[i].ParkID = ids[i]
	}
	return entries, open, nil
}
