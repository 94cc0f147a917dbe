package readmodel_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/rmhook"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// applyIn applies ds in one transaction on pool, preloading like the runtime, its
// writer told the schema the tables are in (rmhook.Schema), when one is given: new
// rows may go by COPY then.
func (b *bank) applyIn(pool *pgxpool.Pool, schema string, ds []events.Decoded) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		w := readmodel.NewWriter(tx)
		if schema != "" {
			rmhook.Schema(w, schema)
		}
		if err := b.p.Preload(ctx, w, ds); err != nil {
			return err
		}
		for _, d := range ds {
			if err := b.p.Apply(ctx, w, d); err != nil {
				return err
			}
		}
		return w.Flush(ctx)
	})
}

// bankOfOwnerO0 returns a bank in a schema of its own, with owner o0 (the owner
// of deposits), and the pool and schema.
func bankOfOwnerO0(t *testing.T) (*pgxpool.Pool, string, *bank) {
	t.Helper()
	pool, schema := testenv.Postgres(t)
	b := newBank(t, pool)
	_, err := pool.Exec(context.Background(), `INSERT INTO owners VALUES ('o0', 0)`)
	require.NoError(t, err)
	return pool, schema, b
}

// deposits returns n deposits, of 1, 2, … n, on new accounts prefix000…, owned by o0.
func deposits(prefix string, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = deposited{ID: fmt.Sprintf("%s%03d", prefix, i), Owner: "o0", Amount: i + 1}
	}
	return out
}

// A batch's new rows (keys loaded as absent), when there are at least 64 of them,
// are written with one COPY; fewer, or a writer not told its schema, use the
// upsert. The rows loaded go back where they are (by ctid), with no upsert. The
// values written are the same either way.
func TestNewRowsGoByCopyAndLoadedRowsByTheirCtid(t *testing.T) {
	t.Parallel()
	pool, schema, b := bankOfOwnerO0(t)
	ctx := context.Background()
	tp, c := traced(t, pool)

	require.NoError(t, b.applyIn(tp, schema, b.decode(t, deposits("big", 100)...)))
	sqls, _ := c.take("")
	require.Equal(t, 1, countPrefix(sqls, `COPY "`+schema+`"."accounts"`), "one COPY of the 100 new accounts: %q", sqls)
	require.Zero(t, countPrefix(sqls, "WITH w AS (INSERT INTO accounts"), "no upsert of accounts: %q", sqls)
	require.Equal(t, 1, countPrefix(sqls, "UPDATE owners AS t"), "the owner, loaded, updated where it is: %q", sqls)
	got := balances(t, pool)
	require.Len(t, got, 100)
	for i := range 100 {
		require.Equal(t, i+1, got[fmt.Sprintf("big%03d", i)])
	}
	var accounts int
	var nulls int
	require.NoError(t, pool.QueryRow(ctx, `SELECT accounts, (SELECT count(*) FROM accounts WHERE closed_at IS NULL) FROM owners`).Scan(&accounts, &nulls))
	require.Equal(t, 100, accounts)
	require.Equal(t, 100, nulls, "a nil pointer is NULL")

	// Fewer than 64 new rows: the upsert.
	require.NoError(t, b.applyIn(tp, schema, b.decode(t, deposits("small", 10)...)))
	sqls, _ = c.take("")
	require.Zero(t, countPrefix(sqls, "COPY"), "%q", sqls)
	require.Equal(t, 1, countPrefix(sqls, "WITH w AS (INSERT INTO accounts"), "%q", sqls)

	// A writer not told its schema: the upsert, however many.
	require.NoError(t, b.applyDecoded(tp, b.decode(t, deposits("plain", 100)...)))
	sqls, _ = c.take("")
	require.Zero(t, countPrefix(sqls, "COPY"), "%q", sqls)
	require.Equal(t, 1, countPrefix(sqls, "WITH w AS (INSERT INTO accounts"), "%q", sqls)

	// Every account again: all loaded, all updated by ctid, none upserted.
	require.NoError(t, b.applyIn(tp, schema, b.decode(t, deposits("big", 100)...)))
	sqls, _ = c.take("")
	require.Zero(t, countPrefix(sqls, "COPY")+countPrefix(sqls, "WITH w AS (INSERT INTO accounts"), "%q", sqls)
	require.Equal(t, 1, countPrefix(sqls, "UPDATE accounts AS t"), "%q", sqls)
	got = balances(t, pool)
	require.Len(t, got, 210)
	require.Equal(t, 2, got["big000"])
	require.Equal(t, 200, got["big099"])
}

// A new key that another transaction inserted after the batch loaded it as absent
// fails the batch's COPY: the batch is stale (a transient error, so retried), the
// other's row stays, and the retry, with the table locking its new keys as after
// any race, writes without COPY.
func TestACopiedNewKeyTakenMeanwhileIsStale(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	tp, c := traced(t, pool)
	ds := b.decode(t, deposits("k", 80)...)

	tx, err := tp.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	rmhook.Schema(w, schema)
	require.NoError(t, b.p.Preload(ctx, w, ds))
	for _, d := range ds {
		require.NoError(t, b.p.Apply(ctx, w, d))
	}
	_, err = pool.Exec(ctx, `INSERT INTO accounts VALUES ('k042', 'other', 7)`) // another batch, meanwhile
	require.NoError(t, err)
	err = w.Flush(ctx)
	require.True(t, readmodel.IsTransient(err), "stale: %v", err)
	require.ErrorContains(t, err, "table accounts: a new row's key is taken")
	require.ErrorContains(t, err, "k042")
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, map[string]int{"k042": 7}, balances(t, pool), "the other's row, nothing of the stale batch")

	c.take("")
	require.NoError(t, b.applyIn(tp, schema, ds), "the retry")
	sqls, _ := c.take("")
	require.Zero(t, countPrefix(sqls, "COPY"), "after a race, no COPY: %q", sqls)
	require.Equal(t, 1, countPrefix(sqls, "SELECT count(pg_advisory_xact_lock"), "after a race, new keys locked: %q", sqls)
	got := balances(t, pool)
	require.Len(t, got, 80)
	require.Equal(t, 7+43, got["k042"], "the other's row, and the retry's deposit on it")
}

type gauge struct {
	ID    string  `db:"id"`
	Level float64 `db:"level"`
}

type count struct {
	ID string `db:"id"`
	N  int    `db:"n"`
}

type measured struct {
	ID    string  `json:"id"`
	Level float64 `json:"level"`
	N     int     `json:"n"`
}

// COPY writes a table's new rows only where each column's type is the one its
// field maps to, or one whose values land the same: a float64 field, 1.5, in an
// integer column goes by the upsert, whose cast rounds it to 2 (pgx's conversion
// for COPY would truncate it to 1); an int field in an integer column goes by COPY.
// A COPY that fails on a value (3,000,000,000 in that integer column: pgx refuses
// to encode it, and gives the COPY up) fails the batch with a transient error and
// turns COPY off for the table, so that the retry meets the upsert's own error, a
// permanent one (its event parks), instead of retrying for ever.
func TestCopyWritesOnlyWhereTheColumnTypesAreTheFields(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE gauges (id text PRIMARY KEY, level integer NOT NULL);
		CREATE TABLE counts (id text PRIMARY KEY, n integer NOT NULL)`)
	require.NoError(t, err)
	reg := events.NewRegistry()
	events.Register[measured](reg, "Measured")
	p, err := readmodel.New("meters", 1, reg)
	require.NoError(t, err)
	gauges := readmodel.NewTable[string, gauge](p, "gauges", "id")
	counts := readmodel.NewTable[string, count](p, "counts", "id")
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v measured) error {
		gauges.Put(w, gauge{ID: v.ID, Level: v.Level})
		counts.Put(w, count{ID: v.ID, N: v.N})
		return nil
	}, readmodel.Loads(gauges, func(v measured) string { return v.ID }), readmodel.Loads(counts, func(v measured) string { return v.ID }))
	tp, c := traced(t, pool)
	batch := func(prefix string, n int) []events.Decoded {
		ds := make([]events.Decoded, 70)
		for i := range ds {
			e, err := reg.New("test", "s", measured{ID: fmt.Sprintf("%s%02d", prefix, i), Level: 1.5, N: n})
			require.NoError(t, err)
			ds[i], err = reg.Decode(e)
			require.NoError(t, err)
		}
		return ds
	}
	apply := func(ds []events.Decoded) error {
		return pgx.BeginFunc(ctx, tp, func(tx pgx.Tx) error {
			w := readmodel.NewWriter(tx)
			rmhook.Schema(w, schema)
			if err := p.Preload(ctx, w, ds); err != nil {
				return err
			}
			for _, d := range ds {
				if err := p.Apply(ctx, w, d); err != nil {
					return err
				}
			}
			return w.Flush(ctx)
		})
	}
	total := func(sql string) (n, sum int) {
		require.NoError(t, pool.QueryRow(ctx, sql).Scan(&n, &sum))
		return n, sum
	}

	require.NoError(t, apply(batch("a", 3)))
	sqls, _ := c.take("")
	require.Zero(t, countPrefix(sqls, `COPY "`+schema+`"."gauges"`), "gauges.level is not a float: no COPY: %q", sqls)
	require.Equal(t, 1, countPrefix(sqls, `COPY "`+schema+`"."counts"`), "an int in an integer column: COPY: %q", sqls)
	n, sum := total(`SELECT count(*), sum(level) FROM gauges`)
	require.Equal(t, []int{70, 140}, []int{n, sum}, "1.5 rounded to 2 by the upsert's cast")
	n, sum = total(`SELECT count(*), sum(n) FROM counts`)
	require.Equal(t, []int{70, 210}, []int{n, sum})

	err = apply(batch("b", 3_000_000_000))
	require.True(t, readmodel.IsTransient(err), "retried once: %v", err)
	require.ErrorContains(t, err, "table counts: COPY of the batch's new rows failed, the table writes them with its upsert from now on")
	c.take("")
	err = apply(batch("b", 3_000_000_000))
	require.Error(t, err)
	require.False(t, readmodel.IsTransient(err), "the upsert's error is the value's: permanent: %v", err)
	require.ErrorContains(t, err, "integer out of range")
	require.NoError(t, apply(batch("c", 1)))
	sqls, _ = c.take("")
	require.Zero(t, countPrefix(sqls, "COPY"), "COPY off: %q", sqls)
	n, sum = total(`SELECT count(*), sum(n) FROM counts`)
	require.Equal(t, []int{140, 280}, []int{n, sum})
}

// A row loaded (its ctid held), then deleted by a DeleteWhere and put again, is
// not there to update by its ctid when the batch writes: it is written by the
// upsert, after the DELETE; so is a row loaded after a DeleteWhere that takes it,
// and put. A row loaded, written, and changed again after the flush has moved: the
// second write is the upsert's too. Every row ends as put.
func TestARowMovedSinceItsLoadIsNotWrittenByItsCtid(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO accounts VALUES ('a', 'o1', 5), ('b', 'o2', 6), ('c', 'o3', 7), ('d', 'o5', 8)`)
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		w := readmodel.NewWriter(tx)
		rmhook.Schema(w, schema)
		// d, loaded, changed to another owner, then its old owner's rows deleted:
		// the DELETE takes the stored d (still o5); the batch writes d again.
		_, err := b.accounts.Update(ctx, w, "d", func(a *account) { a.Owner, a.Balance = "o6", 80 })
		require.NoError(t, err)
		b.accounts.DeleteWhere(w, "owner", "o5")

		b.accounts.DeleteWhere(w, "owner", "o3")
		_, ok, err := b.accounts.Get(ctx, w, "c")
		require.NoError(t, err)
		require.False(t, ok, "c falls under the DeleteWhere")
		b.accounts.Put(w, account{ID: "c", Owner: "o4", Balance: 70})

		row, ok, err := b.accounts.Get(ctx, w, "a")
		require.NoError(t, err)
		require.True(t, ok)
		b.accounts.DeleteWhere(w, "owner", "o1")
		row.Balance = 50
		b.accounts.Put(w, row)

		_, err = b.accounts.Update(ctx, w, "b", func(a *account) { a.Balance = 60 })
		require.NoError(t, err)
		require.NoError(t, w.Flush(ctx))
		_, err = b.accounts.Update(ctx, w, "b", func(a *account) { a.Balance = 61 })
		require.NoError(t, err)
		b.accounts.Delete(w, "a")
		require.NoError(t, w.Flush(ctx))
		b.accounts.Put(w, account{ID: "a", Owner: "o1", Balance: 51})
		return w.Flush(ctx)
	}))
	require.Equal(t, map[string]int{"a": 51, "b": 61, "c": 70, "d": 80}, balances(t, pool))
}

// The write of the rows a batch loaded fetches each where it is (a TID scan), also
// for hundreds of rows of a table of thousands: shown the arrays' length, the
// planner would rather scan the whole table and hash it, a batch's cost growing
// with the table's size.
func TestLoadedRowsAreWrittenByATIDScan(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO accounts SELECT 'a' || lpad(i::text, 5, '0'), 'o0', 0 FROM generate_series(0, 19999) i;
		ANALYZE accounts`)
	require.NoError(t, err)
	tp, c := traced(t, pool)
	var vals []any
	for i := range 500 {
		vals = append(vals, deposited{ID: fmt.Sprintf("a%05d", i*40), Owner: "o0", Amount: 1})
	}
	require.NoError(t, b.applyIn(tp, poolSchema(t, pool), b.decode(t, vals...)))
	sqls, args := c.take("UPDATE accounts AS t")
	require.Len(t, sqls, 1, "one write of the 500 loaded rows")
	rows, err := pool.Query(ctx, "EXPLAIN "+sqls[0], args[0]...)
	require.NoError(t, err)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	text := fmt.Sprint(plan)
	require.Contains(t, text, "Tid Scan on accounts", "%s", text)
	require.NotContains(t, text, "Seq Scan on accounts", "%s", text)
	require.Equal(t, 500, len(balancesAbove(t, pool, 0)))
}

// balancesAbove returns the accounts whose balance is above n.
func balancesAbove(t *testing.T, pool *pgxpool.Pool, n int) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id FROM accounts WHERE balance > $1`, n)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return ids
}

// DeleteWhere looks at every row in memory without allocating for each: a batch
// of a thousand rows and a cascade per deleted user must not cost a thousand
// allocations per cascade.
func TestDeleteWhereDoesNotAllocatePerRow(t *testing.T) {
	p, err := readmodel.New("alloc", 1, events.NewRegistry())
	require.NoError(t, err)
	accounts := readmodel.NewTable[string, account](p, "accounts", "id")
	w := readmodel.NewWriter(nil) // rows in memory only: nothing is sent
	for i := range 1000 {
		accounts.Put(w, account{ID: fmt.Sprintf("a%04d", i), Owner: fmt.Sprintf("o%d", i%10), Balance: i})
	}
	allocs := testing.AllocsPerRun(20, func() { accounts.DeleteWhere(w, "owner", "nobody") })
	require.Less(t, allocs, 20.0, "allocations per DeleteWhere over 1,000 rows")
	accounts.DeleteWhere(w, "owner", "o3")
	for i := range 1000 {
		_, ok, err := accounts.Get(context.Background(), w, fmt.Sprintf("a%04d", i))
		require.NoError(t, err)
		require.Equal(t, i%10 != 3, ok, "a%04d", i)
	}
}

// poolSchema returns the schema pool's search_path starts with.
func poolSchema(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT current_schema()`).Scan(&s))
	return s
}

// The tables of TestWritesByCtidFallBackToTheKey: a kid's parent is set to NULL
// when the parent is deleted.
type parent struct {
	Name string `db:"name"`
}

type kid struct {
	ID     string  `db:"id"`
	Parent *string `db:"parent"`
	N      int     `db:"n"`
	Next   *string `db:"next"`
}

// withWriter runs fn on a writer told schema, in one committed transaction.
func withWriter(pool *pgxpool.Pool, schema string, fn func(w *readmodel.Writer) error) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		w := readmodel.NewWriter(tx)
		rmhook.Schema(w, schema)
		if err := fn(w); err != nil {
			return err
		}
		return w.Flush(ctx)
	})
}

// A row loaded, then moved within the batch by something the table does not see
// (here a foreign key's ON DELETE SET NULL, from deleting its parent in another
// table), is not where it was read: the write by ctid comes up short, the batch is
// retried (transient), and the table writes by key from then on, so the retry
// succeeds. A table with a foreign key to itself is written in one statement, as
// before: a row updated to point at a row new in the batch must not be checked
// before that row is written. A Delete of a loaded row goes by its ctid.
func TestWritesByCtidFallBackToTheKey(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE parents (name text PRIMARY KEY);
		CREATE TABLE kids (id text PRIMARY KEY, parent text REFERENCES parents ON DELETE SET NULL, n int NOT NULL,
			next text REFERENCES kids);
		INSERT INTO parents VALUES ('p');
		INSERT INTO kids VALUES ('k1', 'p', 1, NULL), ('k2', 'p', 2, NULL), ('k3', NULL, 3, NULL)`)
	require.NoError(t, err)
	p, err := readmodel.New("family", 1, events.NewRegistry())
	require.NoError(t, err)
	parents := readmodel.NewTable[string, parent](p, "parents", "name")
	kids := readmodel.NewTable[string, kid](p, "kids", "id")
	tp, c := traced(t, pool)

	// A Delete of a loaded row: by ctid where the table may be split. kids has a
	// foreign key to itself, so it may not: by key.
	err = withWriter(tp, schema, func(w *readmodel.Writer) error {
		if _, _, err := parents.Get(ctx, w, "p"); err != nil {
			return err
		}
		if _, _, err := kids.Get(ctx, w, "k3"); err != nil {
			return err
		}
		kids.Delete(w, "k3")
		return nil
	})
	require.NoError(t, err)
	sqls, _ := c.take("")
	require.Equal(t, 1, countPrefix(sqls, "DELETE FROM kids WHERE id = ANY"), "kids: by key: %q", sqls)

	// kids split, as if it had no foreign key to itself: the cascade moves k1.
	_, err = pool.Exec(ctx, `ALTER TABLE kids DROP CONSTRAINT kids_next_fkey`)
	require.NoError(t, err)
	kids2 := readmodel.NewTable[string, kid](p, "kids", "id") // a fresh declaration: its fit is checked anew
	move := func(w *readmodel.Writer) error {
		if _, err := kids2.Update(ctx, w, "k1", func(k *kid) { k.N, k.Parent = 10, nil }); err != nil {
			return err
		}
		if _, _, err := parents.Get(ctx, w, "p"); err != nil {
			return err
		}
		parents.Delete(w, "p")
		return nil
	}
	// parents is declared first, so its DELETE runs before kids' write: the
	// cascade sets k1.parent to NULL, a new version of k1 elsewhere.
	err = withWriter(tp, schema, move)
	require.True(t, readmodel.IsTransient(err), "retried: %v", err)
	require.ErrorContains(t, err, "table kids: UPDATE of 1 rows loaded and locked by this batch found 0 of them where they were read")
	sqls, _ = c.take("")
	require.Equal(t, 1, countPrefix(sqls, "DELETE FROM parents AS t USING"), "a loaded row deleted by its ctid: %q", sqls)
	require.NoError(t, withWriter(tp, schema, move), "the retry, by key")
	var n int
	var par *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT n, parent FROM kids WHERE id = 'k1'`).Scan(&n, &par))
	require.Equal(t, 10, n)
	require.Nil(t, par)
	var parents0 int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM parents`).Scan(&parents0))
	require.Zero(t, parents0)
}

// A table with a foreign key to itself keeps one statement for its rows: a row
// loaded and updated to point at a row new in the batch is written with it.
func TestATableReferencingItselfIsWrittenInOneStatement(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE kids (id text PRIMARY KEY, parent text, n int NOT NULL, next text REFERENCES kids);
		INSERT INTO kids VALUES ('k1', NULL, 1, NULL)`)
	require.NoError(t, err)
	p, err := readmodel.New("chain", 1, events.NewRegistry())
	require.NoError(t, err)
	kids := readmodel.NewTable[string, kid](p, "kids", "id")
	next := "k2"
	require.NoError(t, withWriter(pool, schema, func(w *readmodel.Writer) error {
		if _, _, err := kids.Get(ctx, w, "k2"); err != nil { // loaded as absent
			return err
		}
		if _, err := kids.Update(ctx, w, "k1", func(k *kid) { k.Next = &next }); err != nil {
			return err
		}
		kids.Put(w, kid{ID: "k2", N: 2})
		return nil
	}))
	var got *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT next FROM kids WHERE id = 'k1'`).Scan(&got))
	require.Equal(t, &next, got)
}

// writeLog is a net.Conn that keeps a copy of every write that starts a COPY.
type writeLog struct {
	net.Conn
	mu     *sync.Mutex
	copies *[][]byte
}

func (c writeLog) Write(b []byte) (int, error) {
	// A simple-protocol query message: 'Q', its length, the statement.
	if len(b) > 5 && b[0] == 'Q' && bytes.HasPrefix(b[5:], []byte("COPY ")) {
		c.mu.Lock()
		*c.copies = append(*c.copies, bytes.Clone(b))
		c.mu.Unlock()
	}
	return c.Conn.Write(b)
}

// A batch's COPY reaches PostgreSQL in writes that each hold a whole statement:
// the COPY, its rows and the end of its data, small enough for the socket buffers
// to take at once. Sent in parts, PostgreSQL would wait for the rest inside the
// statement, where neither idle_in_transaction_session_timeout nor
// statement_timeout ends the wait, holding the batch's locks for as long as a
// stopped process stays stopped.
func TestACopyIsSentAsWholeStatements(t *testing.T) {
	t.Parallel()
	pool, schema, b := bankOfOwnerO0(t)
	ctx := context.Background()
	var mu sync.Mutex
	var copies [][]byte
	cfg := pool.Config()
	dialer := &net.Dialer{}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeLog{Conn: c, mu: &mu, copies: &copies}, nil
	}
	wp, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(wp.Close)

	require.NoError(t, b.applyIn(wp, schema, b.decode(t, deposits("one", 3000)...)))
	mu.Lock()
	defer mu.Unlock()
	require.Greater(t, len(copies), 1, "3,000 new accounts take more than one statement's write")
	for i, w := range copies {
		require.Contains(t, string(w), `"accounts"`)
		require.True(t, bytes.HasSuffix(w, []byte{'c', 0, 0, 0, 4}), "write %d, which starts a COPY, ends with CopyDone (%d bytes, ending %q)", i, len(w), w[max(0, len(w)-16):])
		require.LessOrEqual(t, len(w), 64<<10+200, "write %d: at most 64 KiB and a row", i)
	}
	got := balances(t, pool)
	require.Len(t, got, 3000)
	require.Equal(t, 1, got["one000"])
	require.Equal(t, 3000, got["one2999"])
}

type code struct {
	ID string `db:"id"`
	N  int    `db:"n"`
}

// A load keeps only the rows of the keys it asked for: a char(n) key comes back
// padded, equal to the key asked for in PostgreSQL but not the same string, and a
// row put under that padded key earlier in the batch stays as put, not replaced by
// the stored one.
func TestALoadKeepsOnlyTheKeysItAskedFor(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE codes (id char(5) PRIMARY KEY, n int NOT NULL); INSERT INTO codes VALUES ('ab', 1)`)
	require.NoError(t, err)
	p, err := readmodel.New("codes", 1, events.NewRegistry())
	require.NoError(t, err)
	codes := readmodel.NewTable[string, code](p, "codes", "id")
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		w := readmodel.NewWriter(tx)
		codes.Put(w, code{ID: "ab   ", N: 42})
		if _, _, err := codes.Get(ctx, w, "ab"); err != nil {
			return err
		}
		row, ok, err := codes.Get(ctx, w, "ab   ")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, 42, row.N, "the row put stays as put")
		return w.Flush(ctx)
	}))
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT n FROM codes WHERE id = 'ab'`).Scan(&n))
	require.Equal(t, 42, n)
}

// post is a row of TestASpillWritesNewRowsInOrderAndPutsThemBackOnARollback.
type post struct {
	ID     string `db:"id"`
	Author string `db:"author"`
	N      int    `db:"n"`
}

// A fold's spill (rmhook.Spill) writes the new and deleted rows and forgets them: a row put
// after a DeleteWhere of its column's value is written after the DELETE, so it is
// kept, as at a flush; a key read again after the spill is loaded from the table.
// When the spill's statements are rolled back (to a savepoint), the func it
// returned puts the rows and the DeleteWhere back in memory, and the commit writes
// them.
func TestASpillWritesNewRowsInOrderAndPutsThemBackOnARollback(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE posts (id text PRIMARY KEY, author text NOT NULL, n int NOT NULL);
		INSERT INTO posts VALUES ('old', 'ann', 1), ('other', 'bob', 1)`)
	require.NoError(t, err)
	p, err := readmodel.New("posts", 1, events.NewRegistry())
	require.NoError(t, err)
	posts := readmodel.NewTable[string, post](p, "posts", "id")
	for _, rollback := range []bool{false, true} {
		_, err := pool.Exec(ctx, `DELETE FROM posts; INSERT INTO posts VALUES ('old', 'ann', 1), ('other', 'bob', 1)`)
		require.NoError(t, err)
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			w := readmodel.NewWriter(tx)
			for _, k := range []string{"new1", "new2"} {
				if _, ok, err := posts.Get(ctx, w, k); err != nil || ok {
					return fmt.Errorf("%s: found %v, %w", k, ok, err)
				}
			}
			if _, ok, err := posts.Get(ctx, w, "other"); err != nil || !ok {
				return fmt.Errorf("other: found %v, %w", ok, err)
			}
			posts.Delete(w, "other")
			posts.DeleteWhere(w, "author", "ann")
			posts.Put(w, post{ID: "new1", Author: "ann", N: 1}) // after the DeleteWhere: kept
			posts.Put(w, post{ID: "new2", Author: "bob", N: 2})
			w.Exec("SAVEPOINT s")
			undo := rmhook.Spill(w)
			if err := rmhook.Send(ctx, w); err != nil {
				return err
			}
			require.Zero(t, rmhook.Held(w), "the new and deleted rows are forgotten once spilled")
			if rollback {
				w.Exec("ROLLBACK TO SAVEPOINT s")
				if err := rmhook.Send(ctx, w); err != nil {
					return err
				}
				undo()
				require.Equal(t, 3, rmhook.Held(w), "the new and deleted rows are back in memory")
			} else {
				row, ok, err := posts.Get(ctx, w, "new2") // loaded from the table
				require.NoError(t, err)
				require.True(t, ok)
				require.Equal(t, 2, row.N)
				_, ok, err = posts.Get(ctx, w, "other")
				require.NoError(t, err)
				require.False(t, ok, "deleted by the spill")
			}
			return w.Flush(ctx)
		}))
		rows, err := pool.Query(ctx, `SELECT id, author, n FROM posts ORDER BY id`)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[post])
		require.NoError(t, err)
		require.Equal(t, []post{{"new1", "ann", 1}, {"new2", "bob", 2}}, got, "rolled back: %v", rollback)
	}
}
