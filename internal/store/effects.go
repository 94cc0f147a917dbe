package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Queries on effect_starts (when each effect started on each partition: its
// horizon) and parked_effects (effect runs that failed, kept for an operator).
// Package internal/effects runs them, admin.DLQ lists and retries the parked runs.
// Effect watermarks are offsets rows of their own (offsets.go).

// EffectDB is what EffectHorizon needs of a pool, connection or transaction.
type EffectDB interface {
	Execer
	RowQuerier
}

// EffectHorizon records (once) when k's effect started on k's partition, with the
// horizon it is counted back from, and returns the start of its window: events older
// than from never fire. When the recorded horizon is not horizon, it moves the
// window to horizon counted back from the same start, and returns moved with the
// horizon it had (nil: none recorded).
func EffectHorizon(ctx context.Context, db EffectDB, schema string, k Partition, horizon time.Duration) (from time.Time, moved bool, was *string, err error) {
	tbl := table(schema, tableEffectStarts)
	args := []any{k.Effect, k.Projection, k.Version, k.Topic, k.Partition, horizon.String()}
	if _, err := db.Exec(ctx, `INSERT INTO `+tbl+` (effect, projection, version, topic, partition, horizon_from, horizon)
		VALUES ($1, $2, $3, $4, $5, now() - $6::interval, $6::interval) ON CONFLICT DO NOTHING`, args...); err != nil {
		return from, false, nil, err
	}
	err = db.QueryRow(ctx, `WITH old AS (
			SELECT horizon FROM `+tbl+`
			 WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5)
		UPDATE `+tbl+` s SET horizon_from = s.started_at - $6::interval, horizon = $6::interval
		  FROM old
		 WHERE s.effect = $1 AND s.projection = $2 AND s.version = $3 AND s.topic = $4 AND s.partition = $5
		   AND s.horizon IS DISTINCT FROM $6::interval
		RETURNING s.horizon_from, old.horizon::text`, args...).Scan(&from, &was)
	if err == nil {
		return from, true, was, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return from, false, nil, err
	}
	err = db.QueryRow(ctx, `SELECT horizon_from FROM `+tbl+`
		WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5`, args[:5]...).Scan(&from)
	return from, false, nil, err
}

// NewParkedEffect is an effect run to park.
type NewParkedEffect struct {
	Offset         int64
	EventID        string
	EventType      string
	IdempotencyKey string
	Error          string
	Attempts       int // the attempts this time, added to those before
	Key            []byte
	Value          []byte
	Headers        []byte // JSON
}

// QueueParkEffect queues on q parking a run of k's effect on k's partition, or
// parking it again with its new reason and attempts.
func QueueParkEffect(q Queue, schema string, k Partition, p NewParkedEffect) {
	tbl := table(schema, tableParkedEffects)
	q.Exec(`INSERT INTO `+tbl+` (effect, projection, version, topic, partition, "offset", event_id, event_type,
			idempotency_key, error, attempts, msg_key, msg_value, msg_headers)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (effect, projection, version, topic, partition, "offset") DO UPDATE
		   SET state = 'parked', error = EXCLUDED.error,
		       attempts = `+tbl+`.attempts + EXCLUDED.attempts, updated_at = now()`,
		k.Effect, k.Projection, k.Version, k.Topic, k.Partition, p.Offset,
		p.EventID, p.EventType, p.IdempotencyKey, p.Error, p.Attempts, p.Key, p.Value, p.Headers)
}

// ParkedEffectRetries returns the parked runs of k's effect on k's partition that an
// operator asked to retry, in offset order.
func ParkedEffectRetries(ctx context.Context, db Querier, schema string, k Partition) ([]ParkedMessage, error) {
	rows, err := db.Query(ctx, `SELECT id, "offset", msg_key, msg_value, msg_headers FROM `+table(schema, tableParkedEffects)+`
			WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5 AND state = 'retry'
			ORDER BY "offset"`, k.Effect, k.Projection, k.Version, k.Topic, k.Partition)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedMessage, error) {
		var m ParkedMessage
		return m, row.Scan(&m.ID, &m.Offset, &m.Key, &m.Value, &m.Headers)
	})
}

// QueueParkedEffectAgain queues on b parking the parked run id again after a retry,
// with its new reason and the attempts it took.
func QueueParkedEffectAgain(b *pgx.Batch, schema string, id int64, reason string, attempts int) {
	b.Queue(`UPDATE `+table(schema, tableParkedEffects)+` SET state = 'parked', error = $2, attempts = attempts + $3, updated_at = now() WHERE id = $1`,
		id, reason, attempts)
}

// QueueParkedEffectResolved queues on b resolving the parked run id: its retry ran
// (or has nothing left to run).
func QueueParkedEffectResolved(b *pgx.Batch, schema string, id int64) {
	b.Queue(`UPDATE `+table(schema, tableParkedEffects)+` SET state = 'resolved', updated_at = now() WHERE id = $1`, id)
}

// ParkedEffectRow is one parked effect run as operators see it. Its fields are
// admin.ParkedEffect's, in the same order, so that one converts to the other.
type ParkedEffectRow struct {
	ID        int64
	Effect    string
	Topic     string
	Partition int
	Offset    int64
	EventID   string
	EventType string
	Key       string // the idempotency key
	Error     string
	Attempts  int
	State     string
	ParkedAt  time.Time
	UpdatedAt time.Time
}

// ListParkedEffects returns a projection version's parked effect runs (resolved ones
// too with all), in effect, partition and offset order.
func ListParkedEffects(ctx context.Context, db Querier, schema, projection string, version int, all bool) ([]ParkedEffectRow, error) {
	rows, err := db.Query(ctx, `SELECT id, effect, topic, partition, "offset", event_id, event_type, idempotency_key, error,
			attempts, state, parked_at, updated_at
		FROM `+table(schema, tableParkedEffects)+` WHERE projection = $1 AND version = $2 AND ($3 OR state <> 'resolved')
		ORDER BY effect, topic, partition, "offset"`, projection, version, all)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedEffectRow, error) {
		var p ParkedEffectRow
		err := row.Scan(&p.ID, &p.Effect, &p.Topic, &p.Partition, &p.Offset, &p.EventID, &p.EventType, &p.Key, &p.Error,
			&p.Attempts, &p.State, &p.ParkedAt, &p.UpdatedAt)
		return p, err
	})
}

// CountParkedEffects returns the number of a projection version's parked effect runs
// not resolved, per effect.
func CountParkedEffects(ctx context.Context, db Querier, schema, projection string, version int) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT effect, count(*) FROM `+table(schema, tableParkedEffects)+`
		WHERE projection = $1 AND version = $2 AND state <> 'resolved' GROUP BY effect`, projection, version)
	if err != nil {
		return nil, err
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

// RequestEffectRetry marks for retry a projection version's parked runs of effect
// ("" for every effect), and returns how many it marked.
func RequestEffectRetry(ctx context.Context, db Execer, schema, projection string, version int, effect string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE `+table(schema, tableParkedEffects)+` SET state = 'retry', updated_at = now()
		WHERE projection = $1 AND version = $2 AND state = 'parked' AND ($3 = '' OR effect = $3)`, projection, version, effect)
	return tag.RowsAffected(), err
}

// OpenParkedEffect is a parked effect run as the chaos oracle checks it. Its fields
// are chaos.ParkedEffect's, in the same order.
type OpenParkedEffect struct {
	Key, EventID, Error string
}

// ListOpenParkedEffects returns a projection's parked effect runs (state parked),
// over its versions.
func ListOpenParkedEffects(ctx context.Context, db Querier, schema, projection string) ([]OpenParkedEffect, error) {
	rows, err := db.Query(ctx, `SELECT idempotency_key, event_id, error FROM `+table(schema, tableParkedEffects)+` WHERE projection = $1 AND state = 'parked'`, projection)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (OpenParkedEffect, error) {
		var pe OpenParkedEffect
		return pe, r.Scan(&pe.Key, &pe.EventID, &pe.Error)
	})
}
