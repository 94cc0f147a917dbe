// Package parking is the parked-events table as a partition's worker uses it:
// parking an event (with its record, reason and the offset it waits behind),
// which aggregates are held behind a parked event, what an operator asked to
// retry or skip, and settling those requests.
//
// # The cut
//
// Package projector (the runtime) decides what parks (internal/judge), and
// replays parked events an operator asked for, in its worker, between batches;
// every statement it runs on the parked table is here, in the worker's own
// transactions (Queue… methods queue on its readmodel.Writer). The table itself
// is internal/store's (a column is a new migration there). What operators do from
// outside — listing parked events, asking for a retry or a skip — is admin.DLQ.
// A change to how a parked event is stored, found or settled goes here.
package parking

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

// Lot is the parked table of one framework schema.
type Lot struct {
	Pool   *pgxpool.Pool
	Tables store.Tables
}

// Skip is a parked event an operator asked to skip.
type Skip struct {
	ID  int64
	Msg kafka.Message
}

// Holding returns the partition's aggregates held behind an open parked event,
// each with the lowest such offset.
func (l Lot) Holding(ctx context.Context, k offsets.Key) (map[string]int64, error) {
	return l.subjects(ctx, `SELECT subject, min("offset") FROM `+l.Tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state <> 'resolved' AND subject <> '' AND holds
		GROUP BY subject`, k)
}

// StillParked returns the partition's aggregates held behind an event still
// parked (not asked for), each with the lowest such offset.
func (l Lot) StillParked(ctx context.Context, k offsets.Key) (map[string]int64, error) {
	return l.subjects(ctx, `SELECT subject, min("offset") FROM `+l.Tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'parked' AND holds
		GROUP BY subject`, k)
}

func (l Lot) subjects(ctx context.Context, sql string, k offsets.Key) (map[string]int64, error) {
	rows, err := l.Pool.Query(ctx, sql, k.Projection, k.Version, k.Topic, k.Partition)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var off int64
		if err := rows.Scan(&s, &off); err != nil {
			return nil, err
		}
		out[s] = off
	}
	return out, rows.Err()
}

// Retries returns the partition's parked events an operator asked to retry, in
// offset order, with their parked rows' ids.
func (l Lot) Retries(ctx context.Context, k offsets.Key) ([]kafka.Message, []int64, error) {
	rows, err := l.Pool.Query(ctx, `SELECT id, "offset", msg_key, msg_value, msg_headers FROM `+l.Tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'retry'
		ORDER BY "offset"`, k.Projection, k.Version, k.Topic, k.Partition)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var msgs []kafka.Message
	var ids []int64
	for rows.Next() {
		var m kafka.Message
		var id int64
		var headers []byte
		if err := rows.Scan(&id, &m.Offset, &m.Key, &m.Value, &headers); err != nil {
			return nil, nil, err
		}
		if len(headers) > 0 {
			if err := json.Unmarshal(headers, &m.Headers); err != nil {
				return nil, nil, fmt.Errorf("parked event %d: headers: %w", id, err)
			}
		}
		m.Topic, m.Partition = k.Topic, k.Partition
		msgs, ids = append(msgs, m), append(ids, id)
	}
	return msgs, ids, rows.Err()
}

// Skips returns the partition's parked events an operator asked to skip.
func (l Lot) Skips(ctx context.Context, k offsets.Key) ([]Skip, error) {
	rows, err := l.Pool.Query(ctx, `SELECT id, msg_key, msg_value, msg_headers FROM `+l.Tables.Parked+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'skip'`,
		k.Projection, k.Version, k.Topic, k.Partition)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Skip, error) {
		var s Skip
		var headers []byte
		if err := row.Scan(&s.ID, &s.Msg.Key, &s.Msg.Value, &headers); err != nil {
			return s, err
		}
		if len(headers) > 0 {
			_ = json.Unmarshal(headers, &s.Msg.Headers)
		}
		return s, nil
	})
}

// QueueSkip resolves a skipped event, and moves its aggregate's sequence past it
// (a skipped event counts as consumed, so the events behind it are not gaps).
func (l Lot) QueueSkip(w *readmodel.Writer, k offsets.Key, s Skip) {
	w.Exec(`UPDATE `+l.Tables.Parked+` SET state = 'resolved', error = 'skipped by operator: ' || error, updated_at = now()
			WHERE id = $1`, s.ID)
	if ev, err := eventlog.FromMessage(s.Msg); err == nil && ev.Sequence > 0 {
		w.Exec(`INSERT INTO `+l.Tables.Aggregates+` (projection, version, subject, last_sequence, last_event_id)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (projection, version, subject) DO UPDATE
				   SET last_sequence = EXCLUDED.last_sequence, last_event_id = EXCLUDED.last_event_id
				 WHERE `+l.Tables.Aggregates+`.last_sequence < EXCLUDED.last_sequence`,
			k.Projection, k.Version, judge.Text(ev.Subject), int64(ev.Sequence), judge.Text(ev.ID))
	}
}

// QueuePark parks e (judged judge.Park), or parks it again with its new reason.
func (l Lot) QueuePark(w *readmodel.Writer, k offsets.Key, e *judge.Entry) {
	headers, _ := json.Marshal(e.Msg.Headers)
	var behind *int64
	if e.Behind >= 0 {
		behind = &e.Behind
	}
	w.Exec(`INSERT INTO `+l.Tables.Parked+` (projection, version, topic, partition, "offset", subject, event_id, event_type,
			error, behind, msg_key, msg_value, msg_headers, holds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (projection, version, topic, partition, "offset") DO UPDATE
		   SET state = 'parked', error = EXCLUDED.error, behind = EXCLUDED.behind, holds = EXCLUDED.holds,
		       attempts = `+l.Tables.Parked+`.attempts + 1, updated_at = now()`,
		k.Projection, k.Version, k.Topic, k.Partition, e.Msg.Offset, judge.Text(e.Subject()), judge.Text(e.Event.ID), judge.Text(e.Event.Type),
		judge.Text(e.Reason), behind, e.Msg.Key, e.Msg.Value, headers, !e.Alone)
}

// QueueHeld puts a retried event back to parked, untried: it waits behind an
// older event of its aggregate that stays parked.
func (l Lot) QueueHeld(w *readmodel.Writer, e *judge.Entry) {
	w.Exec(`UPDATE `+l.Tables.Parked+` SET state = 'parked', updated_at = now() WHERE id = $1`, e.ParkID)
}

// QueueSettled records a retried event's outcome: resolved when it applied,
// parked again with its new reason when not. It reports whether it resolved.
func (l Lot) QueueSettled(w *readmodel.Writer, e *judge.Entry) bool {
	if e.Act == judge.Park {
		w.Exec(`UPDATE `+l.Tables.Parked+` SET state = 'parked', error = $2, behind = $3, attempts = attempts + 1, updated_at = now() WHERE id = $1`,
			e.ParkID, e.Reason, nullable(e.Behind))
		return false
	}
	w.Exec(`UPDATE `+l.Tables.Parked+` SET state = 'resolved', updated_at = now() WHERE id = $1`, e.ParkID)
	return true
}

func nullable(off int64) *int64 {
	if off < 0 {
		return nil
	}
	return &off
}
