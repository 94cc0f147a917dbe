// Package parking is the parked-events table as a partition's worker uses it:
// parking an event (with its record, reason and the offset it waits behind),
// which aggregates are held behind a parked event, what an operator asked to
// retry or skip, and settling those requests.
//
// # The cut
//
// Package projector (the runtime) decides what parks (internal/judge), and
// replays parked events an operator asked for, in its worker, between batches;
// every statement it runs on the parked table goes through here, in the worker's
// own transactions (Queue… methods queue on its readmodel.Writer). The table and
// its queries are internal/store's (a column is a new migration there, a query a
// function of store/parked.go). What operators do from
// outside — listing parked events, asking for a retry or a skip — is admin.DLQ.
// A change to how a parked event is stored, found or settled goes here.
package parking

import (
	"context"
	"encoding/json"
	"fmt"

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
	Schema string // the framework schema
}

// Skip is a parked event an operator asked to skip.
type Skip struct {
	ID  int64
	Msg kafka.Message
}

// Holding returns the partition's aggregates held behind an open parked event,
// each with the lowest such offset.
func (l Lot) Holding(ctx context.Context, k offsets.Key) (map[string]int64, error) {
	return store.HoldingSubjects(ctx, l.Pool, l.Schema, store.Partition(k))
}

// StillParked returns the partition's aggregates held behind an event still
// parked (not asked for), each with the lowest such offset.
func (l Lot) StillParked(ctx context.Context, k offsets.Key) (map[string]int64, error) {
	return store.StillParkedSubjects(ctx, l.Pool, l.Schema, store.Partition(k))
}

// Retries returns the partition's parked events an operator asked to retry, in
// offset order, with their parked rows' ids.
func (l Lot) Retries(ctx context.Context, k offsets.Key) ([]kafka.Message, []int64, error) {
	parked, err := store.ParkedRetries(ctx, l.Pool, l.Schema, store.Partition(k))
	if err != nil {
		return nil, nil, err
	}
	var msgs []kafka.Message
	var ids []int64
	for _, p := range parked {
		m := kafka.Message{Topic: k.Topic, Partition: k.Partition, Offset: p.Offset, Key: p.Key, Value: p.Value}
		if len(p.Headers) > 0 {
			if err := json.Unmarshal(p.Headers, &m.Headers); err != nil {
				return nil, nil, fmt.Errorf("parked event %d: headers: %w", p.ID, err)
			}
		}
		msgs, ids = append(msgs, m), append(ids, p.ID)
	}
	return msgs, ids, nil
}

// Skips returns the partition's parked events an operator asked to skip.
func (l Lot) Skips(ctx context.Context, k offsets.Key) ([]Skip, error) {
	parked, err := store.ParkedSkips(ctx, l.Pool, l.Schema, store.Partition(k))
	if err != nil {
		return nil, err
	}
	out := make([]Skip, 0, len(parked))
	for _, p := range parked {
		s := Skip{ID: p.ID, Msg: kafka.Message{Key: p.Key, Value: p.Value}}
		if len(p.Headers) > 0 {
			_ = json.Unmarshal(p.Headers, &s.Msg.Headers)
		}
		out = append(out, s)
	}
	return out, nil
}

// QueueSkip resolves a skipped event, and moves its aggregate's sequence past it
// (a skipped event counts as consumed, so the events behind it are not gaps).
func (l Lot) QueueSkip(w *readmodel.Writer, k offsets.Key, s Skip) {
	store.QueueParkedSkipped(w, l.Schema, s.ID)
	if ev, err := eventlog.FromMessage(s.Msg); err == nil && ev.Sequence > 0 {
		store.QueuePassAggregate(w, l.Schema, k.Projection, k.Version, judge.Text(ev.Subject), int64(ev.Sequence), judge.Text(ev.ID))
	}
}

// QueuePark parks e (judged judge.Park), or parks it again with its new reason.
func (l Lot) QueuePark(w *readmodel.Writer, k offsets.Key, e *judge.Entry) {
	headers, _ := json.Marshal(e.Msg.Headers)
	store.QueuePark(w, l.Schema, store.Partition(k), store.NewParked{
		Offset: e.Msg.Offset, Subject: judge.Text(e.Subject()), EventID: judge.Text(e.Event.ID), EventType: judge.Text(e.Event.Type),
		Error: judge.Text(e.Reason), Behind: nullable(e.Behind), Key: e.Msg.Key, Value: e.Msg.Value, Headers: headers, Holds: !e.Alone,
	})
}

// QueueHeld puts a retried event back to parked, untried: it waits behind an
// older event of its aggregate that stays parked.
func (l Lot) QueueHeld(w *readmodel.Writer, e *judge.Entry) {
	store.QueueParkedHeld(w, l.Schema, e.ParkID)
}

// QueueSettled records a retried event's outcome: resolved when it applied,
// parked again with its new reason when not. It reports whether it resolved.
func (l Lot) QueueSettled(w *readmodel.Writer, e *judge.Entry) bool {
	if e.Act == judge.Park {
		store.QueueParkedAgain(w, l.Schema, e.ParkID, e.Reason, nullable(e.Behind))
		return false
	}
	store.QueueParkedResolved(w, l.Schema, e.ParkID)
	return true
}

func nullable(off int64) *int64 {
	if off < 0 {
		return nil
	}
	return &off
}
