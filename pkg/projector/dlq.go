package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// loadParked reads which aggregates of the partition have open parked events.
func (r *Runner) loadParked(ctx context.Context, p *partition) error {
	rows, err := r.cfg.Pool.Query(ctx, `SELECT subject, min("offset") FROM `+r.tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state <> 'resolved' AND subject <> '' AND holds
		GROUP BY subject`, p.Key.Projection, p.Key.Version, p.Key.Topic, p.Key.Partition)
	if err != nil {
		return err
	}
	defer rows.Close()
	parked := map[string]int64{}
	for rows.Next() {
		var s string
		var off int64
		if err := rows.Scan(&s, &off); err != nil {
			return err
		}
		parked[s] = off
	}
	if err := rows.Err(); err != nil {
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
		tx, st, err := r.begin(ctx, entries)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
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
	r.metrics.resolved.Add(float64(resolved))
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
			w.Exec(`UPDATE `+r.tables.Parked+` SET state = 'parked', updated_at = now() WHERE id = $1`, e.ParkID)
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
		e := &ready[i]
		if e.Act == judge.Park {
			still++
			w.Exec(`UPDATE `+r.tables.Parked+` SET state = 'parked', error = $2, behind = $3, attempts = attempts + 1, updated_at = now() WHERE id = $1`,
				e.ParkID, e.Reason, nullable(e.Behind))
		} else {
			resolved++
			w.Exec(`UPDATE `+r.tables.Parked+` SET state = 'resolved', updated_at = now() WHERE id = $1`, e.ParkID)
		}
	}
	return resolved, still
}

// applySkips resolves the partition's parked events an operator asked to skip.
func (r *Runner) applySkips(ctx context.Context, p *partition) (int, error) {
	rows, err := r.cfg.Pool.Query(ctx, `SELECT id, msg_key, msg_value, msg_headers FROM `+r.tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'skip'`,
		p.Key.Projection, p.Key.Version, p.Key.Topic, p.Key.Partition)
	if err != nil {
		return 0, err
	}
	type skip struct {
		id  int64
		msg kafka.Message
	}
	skips, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (skip, error) {
		var s skip
		var headers []byte
		if err := row.Scan(&s.id, &s.msg.Key, &s.msg.Value, &headers); err != nil {
			return s, err
		}
		if len(headers) > 0 {
			_ = json.Unmarshal(headers, &s.msg.Headers)
		}
		return s, nil
	})
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
		w.Exec(`UPDATE `+r.tables.Parked+` SET state = 'resolved', error = 'skipped by operator: ' || error, updated_at = now()
			WHERE id = $1`, s.id)
		if ev, err := eventlog.FromMessage(s.msg); err == nil && ev.Sequence > 0 {
			w.Exec(`INSERT INTO `+r.tables.Aggregates+` (projection, version, subject, last_sequence, last_event_id)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (projection, version, subject) DO UPDATE
				   SET last_sequence = EXCLUDED.last_sequence, last_event_id = EXCLUDED.last_event_id
				 WHERE `+r.tables.Aggregates+`.last_sequence < EXCLUDED.last_sequence`,
				p.Key.Projection, p.Key.Version, judge.Text(ev.Subject), int64(ev.Sequence), judge.Text(ev.ID))
		}
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

func nullable(off int64) *int64 {
	if off < 0 {
		return nil
	}
	return &off
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
	rows, err := r.cfg.Pool.Query(ctx, `SELECT id, "offset", msg_key, msg_value, msg_headers FROM `+r.tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'retry'
		ORDER BY "offset"`, p.Key.Projection, p.Key.Version, p.Key.Topic, p.Key.Partition)
	if err != nil {
		return nil, nil, err
	}
	var msgs []kafka.Message
	var ids []int64
	for rows.Next() {
		var m kafka.Message
		var id int64
		var headers []byte
		if err := rows.Scan(&id, &m.Offset, &m.Key, &m.Value, &headers); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if len(headers) > 0 {
			if err := json.Unmarshal(headers, &m.Headers); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("parked event %d: headers: %w", id, err)
			}
		}
		m.Topic, m.Partition = p.Key.Topic, p.Key.Partition
		msgs, ids = append(msgs, m), append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(msgs) == 0 {
		return nil, nil, err
	}
	open := map[string]int64{}
	rows, err = r.cfg.Pool.Query(ctx, `SELECT subject, min("offset") FROM `+r.tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'parked' AND holds
		GROUP BY subject`, p.Key.Projection, p.Key.Version, p.Key.Topic, p.Key.Partition)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var s string
		var off int64
		if err := rows.Scan(&s, &off); err != nil {
			rows.Close()
			return nil, nil, err
		}
		open[s] = off
	}
	rows.Close()
	if err := rows.Err(); err != nil {
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
