package projector

import (
	"context"
	"errors"

	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

// preload loads, before a batch's handlers run, the rows they declared they touch
// (readmodel.Loads) and the writer does not hold: one query per table, in one round
// trip with what is queued (the sequence marks and seen ids, the offset write), which
// it sends in any case. In careful mode it loads nothing: each event loads its
// own rows under its savepoint, so that a key PostgreSQL refuses (a poison event's
// NUL byte) parks that event alone; outside it, such a refusal is errCareful.
func (r *Runner) preload(ctx context.Context, w *readmodel.Writer, entries []judge.Entry, careful bool) error {
	if careful {
		return nil // applyOnce sent the queue already
	}
	ds := make([]events.Decoded, 0, len(entries))
	for i := range entries {
		if d := entries[i].Decoded; d != nil {
			ds = append(ds, *d)
		}
	}
	err := r.cfg.Projection.Preload(ctx, w, ds)
	if err == nil {
		err = w.Flush(ctx) // no row to load: the marks are still to be read
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, offsets.ErrFenced) && !readmodel.IsTransient(err) {
		return errCareful
	}
	return err
}
