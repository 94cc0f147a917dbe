package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
	parked     string // the quoted tables
	effects    string
	projection string
	version    int
}

// NewDLQ returns the parked-event queue of a projection version in the framework schema.
func NewDLQ(pool *pgxpool.Pool, schema, projection string, version int) *DLQ {
	if schema == "" {
		schema = readmodel.FrameworkSchemaDefault
	}
	t := store.TablesIn(schema)
	return &DLQ{pool: pool, parked: t.Parked, effects: t.ParkedEffects,
		projection: projection, version: version}
}

// List returns parked events (state parked or retry; resolved ones too with all),
// in partition and offset order.
func (q *DLQ) List(ctx context.Context, all bool) ([]Parked, error) {
	rows, err := q.pool.Query(ctx, `SELECT id, topic, partition, "offset", subject, event_id, event_type, error, behind,
			attempts, state, parked_at, updated_at
		FROM `+q.parked+` WHERE projection = $1 AND version = $2 AND ($3 OR state <> 'resolved')
		ORDER BY topic, partition, "offset"`, q.projection, q.version, all)
	if err != nil {
		return nil, fmt.Errorf("dlq: list: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Parked, error) {
		var p Parked
		err := row.Scan(&p.ID, &p.Topic, &p.Partition, &p.Offset, &p.Subject, &p.EventID, &p.EventType, &p.Error, &p.Behind,
			&p.Attempts, &p.State, &p.ParkedAt, &p.UpdatedAt)
		return p, err
	})
}

// Counts returns the number of open parked events per partition.
func (q *DLQ) Counts(ctx context.Context) (map[int]int, error) {
	rows, err := q.pool.Query(ctx, `SELECT partition, count(*) FROM `+q.parked+`
		WHERE projection = $1 AND version = $2 AND state <> 'resolved' GROUP BY partition`, q.projection, q.version)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]int{}
	for rows.Next() {
		var p, n int
		if err := rows.Scan(&p, &n); err != nil {
			return nil, err
		}
		out[p] = n
	}
	return out, rows.Err()
}

// EffectCounts returns the number of parked effect runs not resolved, per effect.
func (q *DLQ) EffectCounts(ctx context.Context) (map[string]int, error) {
	rows, err := q.pool.Query(ctx, `SELECT effect, count(*) FROM `+q.effects+`
		WHERE projection = $1 AND version = $2 AND state <> 'resolved' GROUP BY effect`, q.projection, q.version)
	if err != nil {
		return nil, fmt.Errorf("dlq: count effects: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var effect string
		var n int
		if err := rows.Scan(&effect, &n); err != nil {
			return nil, err
		}
		out[effect] = n
	}
	return out, rows.Err()
}

// RequestRetry asks the running workers to retry the parked events of the given
// aggregates (all parked aggregates when subjects is empty). Every open parked event
// of a chosen aggregate is marked, so its events are retried together, in order.
// It returns how many events were marked. The owning worker picks them up within
// its RetryPoll; nothing happens while no projector runs.
func (q *DLQ) RequestRetry(ctx context.Context, subjects []string) (int64, error) {
	tag, err := q.pool.Exec(ctx, `UPDATE `+q.parked+` SET state = 'retry', updated_at = now()
		WHERE projection = $1 AND version = $2 AND state = 'parked' AND (coalesce(cardinality($3::text[]), 0) = 0 OR subject = ANY($3))`,
		q.projection, q.version, subjects)
	if err != nil {
		return 0, fmt.Errorf("dlq: retry: %w", err)
	}
	return tag.RowsAffected(), nil
}

// RequestSkip asks the running workers to give up on parked events by id: they are
// marked resolved without being applied ("skipped by operator"), and the events
// behind them can then be retried. It returns how many were marked.
func (q *DLQ) RequestSkip(ctx context.Context, ids []int64) (int64, error) {
	tag, err := q.pool.Exec(ctx, `UPDATE `+q.parked+` SET state = 'skip', updated_at = now()
		WHERE projection = $1 AND version = $2 AND state IN ('parked', 'retry') AND id = ANY($3)`, q.projection, q.version, ids)
	if err != nil {
		return 0, fmt.Errorf("dlq: skip: %w", err)
	}
	return tag.RowsAffected(), nil
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
	rows, err := q.pool.Query(ctx, `SELECT id, effect, topic, partition, "offset", event_id, event_type, idempotency_key, error,
			attempts, state, parked_at, updated_at
		FROM `+q.effects+` WHERE projection = $1 AND version = $2 AND ($3 OR state <> 'resolved')
		ORDER BY effect, topic, partition, "offset"`, q.projection, q.version, all)
	if err != nil {
		return nil, fmt.Errorf("dlq: list effects: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedEffect, error) {
		var p ParkedEffect
		err := row.Scan(&p.ID, &p.Effect, &p.Topic, &p.Partition, &p.Offset, &p.EventID, &p.EventType, &p.Key, &p.Error,
			&p.Attempts, &p.State, &p.ParkedAt, &p.UpdatedAt)
		return p, err
	})
}

// RequestEffectRetry asks the running workers to run the parked runs of an effect
// again ("" for every effect). It returns how many were marked.
func (q *DLQ) RequestEffectRetry(ctx context.Context, effect string) (int64, error) {
	tag, err := q.pool.Exec(ctx, `UPDATE `+q.effects+` SET state = 'retry', updated_at = now()
		WHERE projection = $1 AND version = $2 AND state = 'parked' AND ($3 = '' OR effect = $3)`, q.projection, q.version, effect)
	if err != nil {
		return 0, fmt.Errorf("dlq: retry effects: %w", err)
	}
	return tag.RowsAffected(), nil
}
