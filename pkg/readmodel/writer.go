package readmodel

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector/projector/internal/rmhook"
)

// Writer is a batch's view of one transaction: the rows of its Tables held in
// memory (an identity map for the batch, written at Flush), and the statements
// queued with Exec. The runtime sends the queue in one round trip. Query and
// QueryRow send what is queued first, then read inside the same transaction.
//
// Exec is the slow path, for what the Table methods cannot say. Called from a
// handler, it is a barrier: the rows changed so far are queued before the
// statement, and the rows in memory are forgotten after it (the statement may have
// changed them), to be loaded again, together, when next read. The writes then no
// longer follow one key order per table, so partitions sharing rows may deadlock
// (the runtime splits and retries such batches).
type Writer struct {
	tx     pgx.Tx
	batch  *pgx.Batch
	n      int            // statements queued since the last flush
	total  int            // statements queued over the writer's life
	tables map[any]rowSet // by *Table
	order  []tableRows    // in declaration order: rows are written in it
	inFn   bool           // a handler is running (Projection.Apply)
	schema string         // the schema the runtime set first in the search_path (rmhook.Schema): COPY names its tables in it; none: no COPY, no writes by ctid
	steps  []step         // sent before batch, in order: batches queued before a COPY, and the COPYs
}

// step is what a Writer sends before its open batch: a batch of statements queued
// before a COPY, or the COPY.
type step struct {
	batch *pgx.Batch
	copy  func(context.Context, pgx.Tx) error
}

// queueCopy queues fn, a COPY, after the statements queued so far: they are sent
// first, in one round trip, then the COPY, then what is queued after it.
func (w *Writer) queueCopy(fn func(context.Context, pgx.Tx) error) {
	if w.batch.Len() > 0 {
		w.steps = append(w.steps, step{batch: w.batch})
		w.batch = &pgx.Batch{}
	}
	w.steps = append(w.steps, step{copy: fn})
	w.n++
	w.total++
}

// NewWriter returns a writer over tx. The runtime and package projectortest make
// writers; handlers only use them.
func NewWriter(tx pgx.Tx) *Writer { return &Writer{tx: tx, batch: &pgx.Batch{}} }

// Exec queues a statement. Its error, if any, surfaces when the queue is sent.
// From a handler, it is a barrier for the rows in memory (see Writer).
func (w *Writer) Exec(sql string, args ...any) {
	barrier := w.inFn && len(w.order) > 0
	if barrier {
		w.syncRows()
	}
	w.batch.Queue(sql, args...)
	w.n++
	w.total++
	if barrier {
		w.dropRows()
	}
}

// The runtime queues compare-and-set writes whose command tag it checks (the fenced
// advance of a position) through package internal/rmhook: handlers cannot.
func init() {
	rmhook.SetExecCheck(func(w rmhook.Writer, fn func(pgconn.CommandTag) error, sql string, args ...any) {
		w.(*Writer).execCheck(fn, sql, args...)
	})
	rmhook.SetCommit(func(ctx context.Context, w rmhook.Writer) error { return w.(*Writer).commit(ctx) })
	rmhook.SetSchema(func(w rmhook.Writer, schema string) { w.(*Writer).schema = schema })
	rmhook.SetSend(func(ctx context.Context, w rmhook.Writer) error { return w.(*Writer).send(ctx) })
	rmhook.SetHeld(func(w rmhook.Writer) int { return w.(*Writer).held() })
	rmhook.SetSpill(func(w rmhook.Writer) func() { return w.(*Writer).spill() })
	rmhook.SetAdding(func(w rmhook.Writer) bool { return w.(*Writer).adding() })
}

// adding reports whether a table holds Add's sums not yet written.
func (w *Writer) adding() bool {
	for _, t := range w.order {
		if t.rows.adding() {
			return true
		}
	}
	return false
}

// spill queues the writes of every table's new rows and forgets them (see
// rowSet.spill); it returns the func that puts them back, for when the writes are
// rolled back.
func (w *Writer) spill() func() {
	var dones []func()
	for _, t := range w.order {
		n, done := t.rows.spill(w)
		w.n += n
		w.total += n
		if done != nil {
			dones = append(dones, done)
		}
	}
	return func() {
		for _, d := range dones {
			d()
		}
	}
}

// held returns how many rows the writer holds in memory, over all its tables.
func (w *Writer) held() int {
	n := 0
	for _, t := range w.order {
		n += t.rows.size()
	}
	return n
}

// errCommitRolledBack is a COMMIT that PostgreSQL answered with ROLLBACK: the
// transaction had failed before it.
var errCommitRolledBack = errors.New("readmodel: the transaction was rolled back at commit")

// commit queues the writes of the rows changed in memory and COMMIT, and sends the
// queue in one round trip (see rmhook.Commit).
func (w *Writer) commit(ctx context.Context) error {
	w.syncRows()
	w.execCheck(func(ct pgconn.CommandTag) error {
		if ct.String() != "COMMIT" {
			return errCommitRolledBack
		}
		return nil
	}, "COMMIT")
	return w.send(ctx)
}

// execCheck queues a statement whose command tag fn inspects when the queue is sent;
// fn's error fails the send.
func (w *Writer) execCheck(fn func(pgconn.CommandTag) error, sql string, args ...any) {
	w.batch.Queue(sql, args...).Exec(fn)
	w.n++
	w.total++
}

// QueueQuery queues a query whose rows fn reads when the queue is sent; fn's error
// fails the send. The runtime uses it to read what a batch needs before its
// handlers run (sequence marks, seen event ids) in the round trip that loads the
// batch's rows. The query sees the statements queued before it, not the rows
// changed in memory since the last flush: handlers read with Query or the Tables.
func (w *Writer) QueueQuery(fn func(pgx.Rows) error, sql string, args ...any) {
	w.batch.Queue(sql, args...).Query(fn)
	w.n++
	w.total++
}

// Query sends the queued statements, then runs a query in the transaction.
func (w *Writer) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := w.Flush(ctx); err != nil {
		return nil, err
	}
	if w.inFn {
		w.dropRows() // the query may change rows
	}
	return w.tx.Query(ctx, sql, args...)
}

// QueryRow sends the queued statements, then runs a one-row query in the transaction.
func (w *Writer) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := w.Flush(ctx); err != nil {
		return errRow{err}
	}
	if w.inFn {
		w.dropRows()
	}
	return w.tx.QueryRow(ctx, sql, args...)
}

// Discard drops the statements queued and not yet sent, and the rows in memory,
// changed or not: the runtime calls it when it rolls the transaction back to a
// savepoint, and the rows are loaded again when next read.
func (w *Writer) Discard() {
	w.batch, w.steps, w.n = &pgx.Batch{}, nil, 0
	w.dropRows()
}

// Pending returns the number of statements queued and not yet sent.
func (w *Writer) Pending() int { return w.n }

// Statements returns the number of statements queued over the writer's life.
func (w *Writer) Statements() int { return w.total }

// Flush queues the writes of the rows changed in memory (per table, in
// declaration order: a DELETE and an upsert, each in primary-key order), then sends
// the queued statements in one round trip and returns the first error.
func (w *Writer) Flush(ctx context.Context) error {
	w.syncRows()
	return w.send(ctx)
}

func (w *Writer) send(ctx context.Context) error {
	if w.n == 0 {
		return nil
	}
	steps, b := w.steps, w.batch
	w.batch, w.steps, w.n = &pgx.Batch{}, nil, 0
	for _, s := range steps {
		var err error
		if s.batch != nil {
			err = w.tx.SendBatch(ctx, s.batch).Close()
		} else {
			err = s.copy(ctx, w.tx)
		}
		if err != nil {
			return err // the transaction is aborted: what follows would not run
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return w.tx.SendBatch(ctx, b).Close()
}

// load sends the queue with, per table with keys wanted, a query reading and
// locking their rows (after a race on a new key, with a statement locking the
// absent keys first), in one round trip; nothing when no key is wanted.
func (w *Writer) load(ctx context.Context) error {
	queued := 0
	for _, t := range w.order {
		queued += t.rows.queueLoad(w)
	}
	if queued == 0 {
		return nil
	}
	w.n += queued
	w.total += queued
	return w.send(ctx)
}

// tableRows is a table's rows in a Writer, with the table's declaration order.
type tableRows struct {
	order int
	rows  rowSet
}

// addTable makes room for a table's rows, keeping the tables in declaration order.
func (w *Writer) addTable(table any, order int, s rowSet) {
	if w.tables == nil {
		w.tables = map[any]rowSet{}
	}
	w.tables[table] = s
	i, _ := slices.BinarySearchFunc(w.order, order, func(t tableRows, o int) int { return cmp.Compare(t.order, o) })
	w.order = slices.Insert(w.order, i, tableRows{order: order, rows: s})
}

func (w *Writer) syncRows() {
	for _, t := range w.order {
		n := t.rows.sync(w)
		w.n += n
		w.total += n
	}
}

func (w *Writer) dropRows() {
	for _, s := range w.tables {
		s.drop()
	}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
