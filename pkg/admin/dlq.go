package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/readmodel"
)

// Parked is one parked event, as listed for operators.
type Parked struct {
	ID        int64     `json:"id"`
	Topic     string    `json:"topic"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Subject   string    `json:"subject"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Error     string    `json:"error"`
	Behind    *int64    `json:"behind,omitempty"`
	Attempts  int       `json:"attempts"`
	State     string    `json:"state"`
	ParkedAt  time.Time `json:"parked_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DLQ reads and acts on a projection version's parked events. Operators use it
// (projector dlq); it needs only the database.
type DLQ struct {
	pool       *pgxpool.Pool
	schema     string // the framework schema
	projection string
	version    int
}

// NewDLQ returns the parked-event queue of a projection version in the framework schema.
func NewDLQ(pool *pgxpool.Pool, schema, projection string, version int) *DLQ {
	if schema == "" {
		schema = readmodel.FrameworkSchemaDefault
	}
	return &DLQ{pool: pool, schema: schema, projection: projection, version: version}
}

// List returns parked events (state parked or retry; resolved ones too with all),
// in partition and offset order.
func (q *DLQ) List(ctx context.Context, all bool) ([]Parked, error) {
	rows, err := store.ListParked(ctx, q.pool, q.schema, q.projection, q.version, all)
	if err != nil {
		return nil, fmt.Errorf("dlq: list: %w", err)
	}
	out := make([]Parked, len(rows))
	for i, r := range rows {
		out[i] = Parked(r)
	}
	return out, nil
}

// Counts returns the number of open parked events per partition.
func (q *DLQ) Counts(ctx context.Context) (map[int]int, error) {
	return store.CountParked(ctx, q.pool, q.schema, q.projection, q.version)
}

// EffectCounts returns the number of parked effect runs not resolved, per effect.
func (q *DLQ) EffectCounts(ctx context.Context) (map[string]int, error) {
	counts, err := store.CountParkedEffects(ctx, q.pool, q.schema, q.projection, q.version)
	if err != nil {
		return nil, fmt.Errorf("dlq: count effects: %w", err)
	}
	return counts, nil
}

// RequestRetry asks the running workers to retry the parked events of the given
// aggregates (all parked aggregates when subjects is empty). Every open parked event
// of a chosen aggregate is marked, so its events are retried together, in order.
// It returns how many events were marked. The owning worker picks them up within
// its RetryPoll; nothing happens while no projector runs.
func (q *DLQ) RequestRetry(ctx context.Context, subjects []string) (int64, error) {
	n, err := store.RequestParkedRetry(ctx, q.pool, q.schema, q.projection, q.version, subjects)
	if err != nil {
		return 0, fmt.Errorf("dlq: retry: %w", err)
	}
	return n, nil
}

// RequestSkip asks the running workers to give up on parked events by id: they are
// marked resolved without being applied ("skipped by operator"), and the events
// behind them can then be retried. It returns how many were marked.
func (q *DLQ) RequestSkip(ctx context.Context, ids []int64) (int64, error) {
	n, err := store.RequestParkedSkip(ctx, q.pool, q.schema, q.projection, q.version, ids)
	if err != nil {
		return 0, fmt.Errorf("dlq: skip: %w", err)
	}
	return n, nil
}

// ParkedEffect is one parked effect run, as listed for operators.
type ParkedEffect struct {
	ID        int64     `json:"id"`
	Effect    string    `json:"effect"`
	Topic     string    `json:"topic"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Key       string    `json:"idempotency_key"`
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts"`
	State     string    `json:"state"`
	ParkedAt  time.Time `json:"parked_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ListEffects returns parked effect runs (resolved ones too with all).
func (q *DLQ) ListEffects(ctx context.Context, all bool) ([]ParkedEffect, error) {
	rows, err := store.ListParkedEffects(ctx, q.pool, q.schema, q.projection, q.version, all)
	if err != nil {
		return nil, fmt.Errorf("dlq: list effects: %w", err)
	}
	out := make([]ParkedEffect, len(rows))
	for i, r := range rows {
		out[i] = ParkedEffect(r)
	}
	return out, nil
}

// RequestEffectRetry asks the running workers to run the parked runs of an effect
// again ("" for every effect). It returns how many were marked.
func (q *DLQ) RequestEffectRetry(ctx context.Context, effect string) (int64, error) {
	n, err := store.RequestEffectRetry(ctx, q.pool, q.schema, q.projection, q.version, effect)
	if err != nil {
		return 0, fmt.Errorf("dlq: retry effects: %w", err)
	}
	return n, nil
}
