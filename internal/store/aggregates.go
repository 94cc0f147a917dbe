package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Queries on aggregates (each aggregate's last applied sequence and its window of
// recent events) and event_ids (ids of applied events that carry no sequence): the
// marks that order and dedupe a projection version's events.

// QueryQueue queues a query whose rows fn reads when the queue is sent: a
// readmodel.Writer, whose batch the runtime sends with the batch's row loads.
type QueryQueue interface {
	QueueQuery(fn func(pgx.Rows) error, sql string, args ...any)
}

// QueueLoadAggregates queues on q the query of the marks of a projection version's
// subjects; found gets each mark stored, when q's results are read.
func QueueLoadAggregates(q QueryQueue, schema, projection string, version int, subjects []string,
	found func(subject string, seq int64, lastID string, recent []byte)) {
	q.QueueQuery(func(rows pgx.Rows) error {
		for rows.Next() {
			var s, id string
			var seq int64
			var recent []byte
			if err := rows.Scan(&s, &seq, &id, &recent); err != nil {
				return err
			}
			found(s, seq, id, recent)
		}
		return rows.Err()
	}, loadAggregatesSQL(schema), projection, version, subjects)
}

// The mark lookups find each key by the whole primary key, one index probe per key,
// whatever PostgreSQL's statistics say. Written as `subject = ANY($3)`, the planner
// chose by its statistics between probing each subject and reading every mark of
// the projection version with the subjects as a filter. Without statistics (a new
// table, or a new version's rows beside the old version's in the analyzed one) it
// chose the second, so that each batch's lookup read all the version's marks: at
// 2,000 events/s on a fresh service, 1,600 marks read per single-event batch, both
// cores busy and a p99 of 130–290 ms until the first analysis. The LIMIT keeps the
// subquery from being flattened into a join, which the planner would also cost
// by statistics (measured: a hash join over all the marks); per key it has only the
// probe. With statistics, both forms take the same time (1,000 keys among 200,000
// marks: 11 ms each).
func loadAggregatesSQL(schema string) string {
	return `SELECT m.subject, m.last_sequence, m.last_event_id, m.recent FROM unnest($3::text[]) AS k(subject)
			CROSS JOIN LATERAL (SELECT a.subject, a.last_sequence, a.last_event_id, a.recent FROM ` + table(schema, tableAggregates) + ` AS a
				WHERE a.projection = $1 AND a.version = $2 AND a.subject = k.subject LIMIT 1) AS m`
}

func loadEventIDsSQL(schema string) string {
	return `SELECT m.event_id FROM unnest($3::text[]) AS k(event_id)
			CROSS JOIN LATERAL (SELECT e.event_id FROM ` + table(schema, tableEventIDs) + ` AS e
				WHERE e.projection = $1 AND e.version = $2 AND e.event_id = k.event_id LIMIT 1) AS m`
}

// QueueLoadEventIDs queues on q the query of which of ids a projection version has
// applied; found gets each, when q's results are read.
func QueueLoadEventIDs(q QueryQueue, schema, projection string, version int, ids []string, found func(id string)) {
	q.QueueQuery(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			found(id)
		}
		return rows.Err()
	}, loadEventIDsSQL(schema), projection, version, ids)
}

// QueueSaveAggregates queues on q the upsert of a projection version's marks:
// subjects[i] at sequence seqs[i], its last event lastIDs[i] and its encoded window
// recent[i].
func QueueSaveAggregates(q Queue, schema, projection string, version int, subjects []string, seqs []int64, lastIDs []string, recent [][]byte) {
	q.Exec(`INSERT INTO `+table(schema, tableAggregates)+` (projection, version, subject, last_sequence, last_event_id, recent)
			SELECT $1, $2, s, q, i, r FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bytea[]) AS t(s, q, i, r)
			ON CONFLICT (projection, version, subject) DO UPDATE
			   SET last_sequence = EXCLUDED.last_sequence, last_event_id = EXCLUDED.last_event_id, recent = EXCLUDED.recent`,
		projection, version, subjects, seqs, lastIDs, recent)
}

// CopyAggregates inserts by COPY, in tx, a projection version's marks that its table
// does not hold: subjects[i] at sequence seqs[i], its last event lastIDs[i] and its
// encoded window recent[i]. A subject already there fails it with a unique
// violation (SQLSTATE 23505), which aborts tx.
func CopyAggregates(ctx context.Context, tx pgx.Tx, schema, projection string, version int, subjects []string, seqs []int64, lastIDs []string, recent [][]byte) error {
	var b copyBinary
	b.header()
	for i, s := range subjects {
		b.row(6)
		b.text(projection)
		b.int4(int32(version))
		b.text(s)
		b.int8(seqs[i])
		b.text(lastIDs[i])
		b.bytes(recent[i])
	}
	b.trailer()
	_, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(b.buf),
		`COPY `+table(schema, tableAggregates)+` (projection, version, subject, last_sequence, last_event_id, recent) FROM STDIN (FORMAT binary)`)
	if err != nil {
		return fmt.Errorf("store: copy %d new sequence marks: %w", len(subjects), err)
	}
	return nil
}

// copyBinary encodes rows in COPY's binary format.
type copyBinary struct{ buf []byte }

func (c *copyBinary) header() {
	c.buf = append(c.buf, "PGCOPY\n\xff\r\n\x00"...)
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // flags
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // header extension
}
func (c *copyBinary) row(fields int) { c.buf = binary.BigEndian.AppendUint16(c.buf, uint16(fields)) }
func (c *copyBinary) text(s string) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(s)))
	c.buf = append(c.buf, s...)
}
func (c *copyBinary) bytes(b []byte) {
	if b == nil {
		c.buf = binary.BigEndian.AppendUint32(c.buf, 0xffffffff) // NULL
		return
	}
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(b)))
	c.buf = append(c.buf, b...)
}
func (c *copyBinary) int4(v int32) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 4)
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(v))
}
func (c *copyBinary) int8(v int64) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(v))
}
func (c *copyBinary) trailer() { c.buf = binary.BigEndian.AppendUint16(c.buf, 0xffff) }

// QueueSaveEventIDs queues on q the insert of ids a projection version has applied.
func QueueSaveEventIDs(q Queue, schema, projection string, version int, ids []string) {
	q.Exec(`INSERT INTO `+table(schema, tableEventIDs)+` (projection, version, event_id)
			SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING`, projection, version, ids)
}

// QueuePassAggregate queues on q moving subject's sequence up to seq (its last event
// lastID), and never down: a skipped event counts as consumed, so the events behind
// it are not gaps.
func QueuePassAggregate(q Queue, schema, projection string, version int, subject string, seq int64, lastID string) {
	tbl := table(schema, tableAggregates)
	q.Exec(`INSERT INTO `+tbl+` (projection, version, subject, last_sequence, last_event_id)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (projection, version, subject) DO UPDATE
				   SET last_sequence = EXCLUDED.last_sequence, last_event_id = EXCLUDED.last_event_id
				 WHERE `+tbl+`.last_sequence < EXCLUDED.last_sequence`,
		projection, version, subject, seq, lastID)
}
