// Package rmhook gives the framework's runtime what package readmodel keeps from
// users: a statement queued on a batch's Writer whose command tag is checked when
// the batch is sent (the fenced advance of a partition's position), a batch's
// last round trip sent with its COMMIT, and the schema its tables are in. Package
// readmodel installs the mechanism when it is loaded; being internal, it is out of
// handlers' reach.
package rmhook

import (
	"context"

	"github.com/jackc/pgx/v5/pgconn"
)

// Writer is a batch's *readmodel.Writer (this package cannot name the type:
// readmodel imports it).
type Writer interface {
	Exec(sql string, args ...any)
}

var execCheck func(w Writer, fn func(pgconn.CommandTag) error, sql string, args ...any)

// SetExecCheck installs the mechanism ExecCheck runs. Package readmodel calls it
// once, when it is loaded.
func SetExecCheck(f func(w Writer, fn func(pgconn.CommandTag) error, sql string, args ...any)) {
	execCheck = f
}

// ExecCheck queues on w, a *readmodel.Writer, a statement whose command tag fn
// inspects when the queue is sent; fn's error fails the send. The runtime uses it
// for compare-and-set writes.
func ExecCheck(w Writer, fn func(pgconn.CommandTag) error, sql string, args ...any) {
	execCheck(w, fn, sql, args...)
}

var commit func(ctx context.Context, w Writer) error

// SetCommit installs the mechanism Commit runs. Package readmodel calls it once,
// when it is loaded.
func SetCommit(f func(ctx context.Context, w Writer) error) { commit = f }

// Commit sends w's queue, with the writes of the rows in memory, and COMMIT at its
// end, in one round trip: the row locks the writes take are held for the
// statements' own time, not for one more round trip's. A statement that fails
// aborts the transaction, and PostgreSQL skips the rest of the round trip, COMMIT
// too. The caller learns of fencing before it (the position's compare-and-set is
// sent earlier) and rolls back on error.
func Commit(ctx context.Context, w Writer) error { return commit(ctx, w) }

var schema func(w Writer, schema string)

// SetSchema installs the mechanism Schema runs. Package readmodel calls it once,
// when it is loaded.
func SetSchema(f func(w Writer, schema string)) { schema = f }

// Schema tells w, a *readmodel.Writer, the schema its transaction's search_path
// starts with, where the projection's tables are: a batch's new rows are then
// written with COPY into the tables named in it (a COPY's column types are looked
// up once per connection and table name, so the name must not depend on the
// search_path), and its loaded rows written back by ctid. A writer not told
// writes every row with its upsert.
func Schema(w Writer, name string) { schema(w, name) }

var send func(ctx context.Context, w Writer) error

// SetSend installs the mechanism Send runs. Package readmodel calls it once.
func SetSend(f func(ctx context.Context, w Writer) error) { send = f }

// Send sends what is queued on w, a *readmodel.Writer, in one round trip, without
// the writes of the rows changed in memory: a fold (several reads of a partition
// in one transaction) sends each read's loads this way, and writes its rows once,
// with its COMMIT.
func Send(ctx context.Context, w Writer) error { return send(ctx, w) }

var held func(w Writer) int

// SetHeld installs the mechanism Held runs. Package readmodel calls it once.
func SetHeld(f func(w Writer) int) { held = f }

// Held returns how many rows w, a *readmodel.Writer, holds in memory, over all its
// tables: what a fold's memory grows with.
func Held(w Writer) int { return held(w) }

var spill func(w Writer) func()

// SetSpill installs the mechanism Spill runs. Package readmodel calls it once.
func SetSpill(f func(w Writer) func()) { spill = f }

// Spill queues on w, a *readmodel.Writer, the writes of the rows new to their
// tables (loaded as absent, then put) and forgets them, so that reads queued after
// load them from the table: a fold keeps in memory the rows its events touch
// again, and writes the ones they only insert as it goes. It returns the func that
// puts them back in memory, unwritten, for when the writes are rolled back.
func Spill(w Writer) func() { return spill(w) }

var adding func(w Writer) bool

// SetAdding installs the mechanism Adding runs. Package readmodel calls it once.
func SetAdding(f func(w Writer) bool) { adding = f }

// Adding reports whether w, a *readmodel.Writer, holds sums of Table.Add not yet
// written: a load merges them into the rows it reads.
func Adding(w Writer) bool { return adding(w) }
