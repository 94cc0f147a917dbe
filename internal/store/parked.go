package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Queries on parked: the events a projection version's worker parked, with their
// records, reasons and the offsets they wait behind, and what operators asked of
// them (retry, skip). Package parking is the worker's side, admin.DLQ the
// operators'.

// ParkedMessage is a parked event's record, as a worker replays it.
type ParkedMessage struct {
	ID      int64 // the parked row's
	Offset  int64 // 0 where not read (a skip)
	Key     []byte
	Value   []byte
	Headers []byte // JSON, as the record's headers were stored; nil when none
}

// HoldingSubjects returns the partition's aggregates held behind an open parked
// event, each with the lowest such offset.
func HoldingSubjects(ctx context.Context, db Querier, schema string, k Partition) (map[string]int64, error) {
	return parkedSubjects(ctx, db, `SELECT subject, min("offset") FROM `+table(schema, tableParked)+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state <> 'resolved' AND subject <> '' AND holds
		GROUP BY subject`, k)
}

// StillParkedSubjects returns the partition's aggregates held behind an event still
// parked (not asked for), each with the lowest such offset.
func StillParkedSubjects(ctx context.Context, db Querier, schema string, k Partition) (map[string]int64, error) {
	return parkedSubjects(ctx, db, `SELECT subject, min("offset") FROM `+table(schema, tableParked)+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'parked' AND holds
		GROUP BY subject`, k)
}

func parkedSubjects(ctx context.Context, db Querier, sql string, k Partition) (map[string]int64, error) {
	rows, err := db.Query(ctx, sql, k.Projection, k.Version, k.Topic, k.Partition)
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

// ParkedRetries returns the partition's parked events an operator asked to retry,
// in offset order.
func ParkedRetries(ctx context.Context, db Querier, schema string, k Partition) ([]ParkedMessage, error) {
	rows, err := db.Query(ctx, `SELECT id, "offset", msg_key, msg_value, msg_headers FROM `+table(schema, tableParked)+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'retry'
		ORDER BY "offset"`, k.Projection, k.Version, k.Topic, k.Partition)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedMessage, error) {
		var m ParkedMessage
		return m, row.Scan(&m.ID, &m.Offset, &m.Key, &m.Value, &m.Headers)
	})
}

// ParkedSkips returns the partition's parked events an operator asked to skip
// (their offsets unread).
func ParkedSkips(ctx context.Context, db Querier, schema string, k Partition) ([]ParkedMessage, error) {
	rows, err := db.Query(ctx, `SELECT id, msg_key, msg_value, msg_headers FROM `+table(schema, tableParked)+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND state = 'skip'`,
		k.Projection, k.Version, k.Topic, k.Partition)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedMessage, error) {
		var m ParkedMessage
		return m, row.Scan(&m.ID, &m.Key, &m.Value, &m.Headers)
	})
}

// NewParked is an event to park.
type NewParked struct {
	Offset    int64
	Subject   string
	EventID   string
	EventType string
	Error     string // why it parks
	Behind    *int64 // the offset of the event it waits behind; nil when none
	Key       []byte
	Value     []byte
	Headers   []byte // JSON
	Holds     bool   // later events of its aggregate wait behind it
}

// QueuePark queues on q parking p on the partition, or parking it again with its new
// reason (one more attempt).
func QueuePark(q Queue, schema string, k Partition, p NewParked) {
	tbl := table(schema, tableParked)
	q.Exec(`INSERT INTO `+tbl+` (projection, version, topic, partition, "offset", subject, event_id, event_type,
			error, behind, msg_key, msg_value, msg_headers, holds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (projection, version, topic, partition, "offset") DO UPDATE
		   SET state = 'parked', error = EXCLUDED.error, behind = EXCLUDED.behind, holds = EXCLUDED.holds,
		       attempts = `+tbl+`.attempts + 1, updated_at = now()`,
		k.Projection, k.Version, k.Topic, k.Partition, p.Offset, p.Subject, p.EventID, p.EventType,
		p.Error, p.Behind, p.Key, p.Value, p.Headers, p.Holds)
}

// QueueParkedSkipped queues on q resolving the parked event id as skipped by an
// operator.
func QueueParkedSkipped(q Queue, schema string, id int64) {
	q.Exec(`UPDATE `+table(schema, tableParked)+` SET state = 'resolved', error = 'skipped by operator: ' || error, updated_at = now()
			WHERE id = $1`, id)
}

// QueueParkedHeld queues on q putting the parked event id back to parked, its
// attempts untouched: a retry that waits behind an older event still parked.
func QueueParkedHeld(q Queue, schema string, id int64) {
	q.Exec(`UPDATE `+table(schema, tableParked)+` SET state = 'parked', updated_at = now() WHERE id = $1`, id)
}

// QueueParkedAgain queues on q parking the parked event id again after a retry, with
// its new reason and the offset it waits behind (nil: none).
func QueueParkedAgain(q Queue, schema string, id int64, reason string, behind *int64) {
	q.Exec(`UPDATE `+table(schema, tableParked)+` SET state = 'parked', error = $2, behind = $3, attempts = attempts + 1, updated_at = now() WHERE id = $1`,
		id, reason, behind)
}

// QueueParkedResolved queues on q resolving the parked event id: its retry applied.
func QueueParkedResolved(q Queue, schema string, id int64) {
	q.Exec(`UPDATE `+table(schema, tableParked)+` SET state = 'resolved', updated_at = now() WHERE id = $1`, id)
}

// ParkedRow is one parked event as operators see it. Its fields are admin.Parked's,
// in the same order, so that one converts to the other.
type ParkedRow struct {
	ID        int64
	Topic     string
	Partition int
	Offset    int64
	Subject   string
	EventID   string
	EventType string
	Error     string
	Behind    *int64
	Attempts  int
	State     string
	ParkedAt  time.Time
	UpdatedAt time.Time
}

// ListParked returns a projection version's parked events (state parked or retry;
// resolved ones too with all), in partition and offset order.
func ListParked(ctx context.Context, db Querier, schema, projection string, version int, all bool) ([]ParkedRow, error) {
	rows, err := db.Query(ctx, `SELECT id, topic, partition, "offset", subject, event_id, event_type, error, behind,
			attempts, state, parked_at, updated_at
		FROM `+table(schema, tableParked)+` WHERE projection = $1 AND version = $2 AND ($3 OR state <> 'resolved')
		ORDER BY topic, partition, "offset"`, projection, version, all)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (ParkedRow, error) {
		var p ParkedRow
		err := row.Scan(&p.ID, &p.Topic, &p.Partition, &p.Offset, &p.Subject, &p.EventID, &p.EventType, &p.Error, &p.Behind,
			&p.Attempts, &p.State, &p.ParkedAt, &p.UpdatedAt)
		return p, err
	})
}

// CountParked returns the number of a projection version's open parked events per
// partition.
func CountParked(ctx context.Context, db Querier, schema, projection string, version int) (map[int]int, error) {
	rows, err := db.Query(ctx, `SELECT partition, count(*) FROM `+table(schema, tableParked)+`
		WHERE projection = $1 AND version = $2 AND state <> 'resolved' GROUP BY partition`, projection, version)
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

// RequestParkedRetry marks for retry the parked events of a projection version's
// subjects (every parked one when subjects is empty), and returns how many it marked.
func RequestParkedRetry(ctx context.Context, db Execer, schema, projection string, version int, subjects []string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE `+table(schema, tableParked)+` SET state = 'retry', updated_at = now()
		WHERE projection = $1 AND version = $2 AND state = 'parked' AND (coalesce(cardinality($3::text[]), 0) = 0 OR subject = ANY($3))`,
		projection, version, subjects)
	return tag.RowsAffected(), err
}

// RequestParkedSkip marks to be skipped the open parked events of a projection
// version with the given ids, and returns how many it marked.
func RequestParkedSkip(ctx context.Context, db Execer, schema, projection string, version int, ids []int64) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE `+table(schema, tableParked)+` SET state = 'skip', updated_at = now()
		WHERE projection = $1 AND version = $2 AND state IN ('parked', 'retry') AND id = ANY($3)`, projection, version, ids)
	return tag.RowsAffected(), err
}

// OpenParked is an open parked event as the chaos oracle checks it. Its fields are
// chaos.ParkedRow's, in the same order.
type OpenParked struct {
	Partition int
	Offset    int64
	EventID   string
	Subject   string
	Error     string
}

// ListOpenParked returns a projection's open parked events, over its versions.
func ListOpenParked(ctx context.Context, db Querier, schema, projection string) ([]OpenParked, error) {
	rows, err := db.Query(ctx, `SELECT partition, "offset", event_id, subject, error FROM `+table(schema, tableParked)+` WHERE projection = $1 AND state <> 'resolved'`, projection)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (OpenParked, error) {
		var p OpenParked
		return p, r.Scan(&p.Partition, &p.Offset, &p.EventID, &p.Subject, &p.Error)
	})
}
