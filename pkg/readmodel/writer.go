package readmodel

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Writer queues a batch's statements for one transaction. Handlers call Exec, which
// only queues; the runtime sends the queue in one round trip. Query and QueryRow
// send what is queued first, then read inside the same transaction.
type Writer struct {
	tx    pgx.Tx
	batch *pgx.Batch
	n     int // statements queued since the last flush
	total int // statements queued over the writer's life
}

// NewWriter returns a writer over tx. The runtime and package projectortest make
// writers; handlers only use them.
func NewWriter(tx pgx.Tx) *Writer { return &Writer{tx: tx, batch: &pgx.Batch{}} }

// Exec queues a statement. Its error, if any, surfaces when the queue is sent.
func (w *Writer) Exec(sql string, args ...any) {
	w.batch.Queue(sql, args...)
	w.n++
	w.total++
}

// ExecCheck queues a statement whose command tag fn inspects when the queue is sent;
// fn's error fails the send. The runtime uses it for compare-and-set writes.
func (w *Writer) ExecCheck(fn func(pgconn.CommandTag) error, sql string, args ...any) {
	w.batch.Queue(sql, args...).Exec(fn)
	w.n++
	w.total++
}

// Query sends the queued statements, then runs a query in the transaction.
func (w *Writer) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := w.Flush(ctx); err != nil {
		return nil, err
	}
	return w.tx.Query(ctx, sql, args...)
}

// QueryRow sends the queued statements, then runs a one-row query in the transaction.
func (w *Writer) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := w.Flush(ctx); err != nil {
		return errRow{err}
	}
	return w.tx.QueryRow(ctx, sql, args...)
}

// Discard drops the statements queued and not yet sent.
func (w *Writer) Discard() { w.batch, w.n = &pgx.Batch{}, 0 }

// Pending returns the number of statements queued and not yet sent.
func (w *Writer) Pending() int { return w.n }

// Statements returns the number of statements queued over the writer's life.
func (w *Writer) Statements() int { return w.total }

// Flush sends the queued statements in one round trip and returns the first error.
func (w *Writer) Flush(ctx context.Context) error {
	if w.n == 0 {
		return nil
	}
	b := w.batch
	w.batch, w.n = &pgx.Batch{}, 0
	return w.tx.SendBatch(ctx, b).Close()
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
