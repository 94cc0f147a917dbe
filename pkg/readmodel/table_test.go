package readmodel_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/rmhook"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

type account struct {
	ID      string     `db:"id"`
	Owner   string     `db:"owner"`
	Balance int        `db:"balance,sum"`
	Closed  *time.Time `db:"closed_at"`
	Note    string     // not a column
}

type deposited struct {
	ID     string `json:"id"`
	Owner  string `json:"owner"`
	Amount int    `json:"amount"`
}

type closed struct {
	Owner string `json:"owner"`
}

// bank is a projection of accounts and owners on the row API, with its tables made
// in the test's schema.
type bank struct {
	p        *readmodel.Projection
	accounts *readmodel.Table[string, account]
	owners   *readmodel.Table[string, owner]
	reg      *events.Registry
}

type owner struct {
	Name     string `db:"name"`
	Accounts int    `db:"accounts,sum"`
}

func newBank(t *testing.T, pool *pgxpool.Pool) *bank {
	t.Helper()
	reg := events.NewRegistry()
	events.Register[deposited](reg, "Deposited")
	events.Register[closed](reg, "Closed")
	p, err := readmodel.New("bank", 1, reg)
	require.NoError(t, err)
	b := &bank{p: p, reg: reg,
		accounts: readmodel.NewTable[string, account](p, "accounts", "id"),
		owners:   readmodel.NewTable[string, owner](p, "owners", "name")}
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v deposited) error {
		a, ok, err := b.accounts.Get(ctx, w, v.ID)
		if err != nil {
			return err
		}
		if !ok {
			a = account{ID: v.ID, Owner: v.Owner}
			if _, err := b.owners.Update(ctx, w, v.Owner, func(o *owner) { o.Accounts++ }); err != nil {
				return err
			}
		}
		a.Balance += v.Amount
		if a.Balance < 0 {
			return errors.New("overdrawn")
		}
		b.accounts.Put(w, a)
		return nil
	}, readmodel.Loads(b.accounts, func(v deposited) string { return v.ID }),
		readmodel.Loads(b.owners, func(v deposited) string { return v.Owner }))
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v closed) error {
		b.accounts.DeleteWhere(w, "owner", v.Owner)
		b.owners.Delete(w, v.Owner)
		return nil
	})
	ctx := context.Background()
	_, err = pool.Exec(ctx, `CREATE TABLE accounts (id text PRIMARY KEY, owner text NOT NULL, balance int NOT NULL, closed_at timestamptz);
		CREATE TABLE owners (name text PRIMARY KEY, accounts int NOT NULL)`)
	require.NoError(t, err)
	return b
}

// apply runs the handlers of vals in one transaction on pool, preloading like the
// runtime.
func (b *bank) apply(t *testing.T, pool *pgxpool.Pool, vals ...any) error {
	t.Helper()
	return b.applyDecoded(pool, b.decode(t, vals...))
}

// decode makes an event of each of vals and decodes it, as the runtime would.
func (b *bank) decode(t *testing.T, vals ...any) []events.Decoded {
	t.Helper()
	ds := make([]events.Decoded, len(vals))
	for i, v := range vals {
		e, err := b.reg.New("test", "s", v)
		require.NoError(t, err)
		ds[i], err = b.reg.Decode(e)
		require.NoError(t, err)
	}
	return ds
}

func (b *bank) applyDecoded(pool *pgxpool.Pool, ds []events.Decoded) error {
	return b.applyIn(pool, "", ds)
}

func balances(t *testing.T, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT id, balance FROM accounts`)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		require.NoError(t, rows.Scan(&id, &n))
		out[id] = n
	}
	require.NoError(t, rows.Err())
	return out
}

func owners(t *testing.T, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT name, accounts FROM owners`)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var n string
		var c int
		require.NoError(t, rows.Scan(&n, &c))
		out[n] = c
	}
	require.NoError(t, rows.Err())
	return out
}

func TestTableGetPutUpdateDelete(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO owners VALUES ('ann', 0), ('bob', 0)`)
	require.NoError(t, err)

	require.NoError(t, b.apply(t, pool,
		deposited{ID: "a1", Owner: "ann", Amount: 10},
		deposited{ID: "a1", Owner: "ann", Amount: 5}, // the row put above, read back from memory
		deposited{ID: "a2", Owner: "ann", Amount: 1},
		deposited{ID: "b1", Owner: "bob", Amount: 7},
		deposited{ID: "z1", Owner: "zed", Amount: 3})) // no owner row: Update reports false, writes nothing
	require.Equal(t, map[string]int{"a1": 15, "a2": 1, "b1": 7, "z1": 3}, balances(t, pool))
	require.Equal(t, map[string]int{"ann": 2, "bob": 1}, owners(t, pool))

	// A later batch reads what the first wrote; a failing handler commits nothing.
	require.ErrorContains(t, b.apply(t, pool, deposited{ID: "a1", Owner: "ann", Amount: 1}, deposited{ID: "b1", Owner: "bob", Amount: -8}), "overdrawn")
	require.Equal(t, map[string]int{"a1": 15, "a2": 1, "b1": 7, "z1": 3}, balances(t, pool))

	// DeleteWhere removes ann's rows in memory (a1, touched in this batch) and in the
	// database (a2, not loaded), and keeps what is put after it.
	require.NoError(t, b.apply(t, pool,
		deposited{ID: "a1", Owner: "ann", Amount: 1},
		closed{Owner: "ann"},
		deposited{ID: "a3", Owner: "ann", Amount: 4}))
	require.Equal(t, map[string]int{"a3": 4, "b1": 7, "z1": 3}, balances(t, pool))
	require.Equal(t, map[string]int{"bob": 1}, owners(t, pool))

	// Direct use: Get of a missing key, Delete of a row, nullable columns.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	_, ok, err := b.accounts.Get(ctx, w, "nope")
	require.NoError(t, err)
	require.False(t, ok)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ok, err = b.accounts.Update(ctx, w, "b1", func(a *account) { a.Closed = &at })
	require.NoError(t, err)
	require.True(t, ok)
	b.accounts.Delete(w, "z1")
	_, ok, err = b.accounts.Get(ctx, w, "z1")
	require.NoError(t, err)
	require.False(t, ok, "a deleted row is gone for the rest of the batch")
	require.NoError(t, w.Flush(ctx))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, map[string]int{"a3": 4, "b1": 7}, balances(t, pool))
	var got time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT closed_at FROM accounts WHERE id = 'b1'`).Scan(&got))
	require.True(t, got.Equal(at))
}

// counter counts the statements sent, by their first words.
type counter struct {
	mu   sync.Mutex
	sqls []string
	args [][]any
}

func (c *counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.add(d.SQL, d.Args)
	return ctx
}
func (c *counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *counter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (c *counter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	c.add(d.SQL, d.Args)
}
func (c *counter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
func (c *counter) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	c.add("COPY "+d.TableName.Sanitize(), nil)
	return ctx
}
func (c *counter) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

func (c *counter) add(sql string, args []any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sqls, c.args = append(c.sqls, strings.Join(strings.Fields(sql), " ")), append(c.args, args)
}

// take returns and forgets the statements that start with prefix, with their args.
func (c *counter) take(prefix string) ([]string, [][]any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sqls []string
	var args [][]any
	for i, s := range c.sqls {
		if strings.HasPrefix(s, prefix) {
			sqls, args = append(sqls, s), append(args, c.args[i])
		}
	}
	c.sqls, c.args = nil, nil
	return sqls, args
}

func traced(t *testing.T, pool *pgxpool.Pool) (*pgxpool.Pool, *counter) {
	t.Helper()
	c := &counter{}
	cfg := pool.Config()
	cfg.ConnConfig.Tracer = c
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p, c
}

// TestTableLoadsOnceAndWritesOncePerTable: 200 events over 40 accounts and 5
// owners load with one query per table and write with one upsert per table, the
// keys sorted; a key not declared with Loads costs one more query.
func TestTableLoadsOnceAndWritesOncePerTable(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	_, err := pool.Exec(context.Background(), `INSERT INTO owners SELECT 'o' || i, 0 FROM generate_series(0, 4) i`)
	require.NoError(t, err)
	tp, c := traced(t, pool)
	var vals []any
	ids := []string{}
	for i := range 200 {
		id := string(rune('a'+(i*7)%26)) + string(rune('a'+(i*3)%40%26)) + string(rune('0'+i%40/26))
		vals = append(vals, deposited{ID: id, Owner: "o" + string(rune('0'+i%5)), Amount: 1})
		ids = append(ids, id)
	}
	require.NoError(t, b.apply(t, tp, vals...))
	c.mu.Lock()
	first := append([]string(nil), c.sqls...)
	c.mu.Unlock()
	c.take("")
	require.Equal(t, 2, countLoads(first), "one load per table: %q", first)
	require.Zero(t, countPrefix(first, "SELECT count(pg_advisory_xact_lock"), "no lock of new keys before a race: %q", first)
	require.Equal(t, 1, countPrefix(first, "WITH w AS (INSERT INTO accounts"), "one write per table: %q", first)
	require.Equal(t, 1, countPrefix(first, "WITH w AS (INSERT INTO owners"), "one write per table: %q", first)
	// Again, to see the writes' order: every row exists now, Put updates.
	require.NoError(t, b.apply(t, tp, vals...))
	c.mu.Lock()
	all := append([]string(nil), c.sqls...)
	args := append([][]any(nil), c.args...)
	c.mu.Unlock()
	var upserts int
	for i, s := range all {
		if strings.HasPrefix(s, "WITH w AS (INSERT INTO accounts") {
			upserts++
			keys := args[i][0].([]string)
			require.True(t, slices.IsSorted(keys), "keys in order: %v", keys)
			slices.Sort(ids)
			require.Equal(t, slices.Compact(ids), keys)
		}
	}
	require.Equal(t, 1, upserts, "one upsert for accounts: %q", all)
	require.Equal(t, 0, countPrefix(all, "WITH w AS (INSERT INTO owners"), "owners unchanged: not written")
	require.Equal(t, 2, countLoads(all))

	// A key not declared: one more query, for it alone.
	ctx := context.Background()
	tx, err := tp.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	c.take("")
	w := readmodel.NewWriter(tx)
	for range 3 {
		_, _, err := b.accounts.Get(ctx, w, ids[0])
		require.NoError(t, err)
	}
	sqls, _ := c.take("SELECT")
	require.Equal(t, 1, countLoads(sqls), "one read for the key: %q", sqls)
	require.Len(t, sqls, 1, "one read for the key, no lock: %q", sqls)
}

// countLoads counts the reads of loads: SELECTs that are not the keys' locks.
func countLoads(sqls []string) int {
	return countPrefix(sqls, "SELECT") - countPrefix(sqls, "SELECT count(pg_advisory_xact_lock")
}

// writeOf returns the first write of table in sqls.
func writeOf(sqls []string, table string) string {
	for _, s := range sqls {
		if strings.HasPrefix(s, "INSERT INTO "+table+" ") {
			return s
		}
	}
	return ""
}

// ownerOf returns the owner of account id.
func ownerOf(t *testing.T, pool *pgxpool.Pool, id string) string {
	t.Helper()
	var o string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT owner FROM accounts WHERE id = $1`, id).Scan(&o))
	return o
}

func countPrefix(sqls []string, prefix string) int {
	n := 0
	for _, s := range sqls {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// TestTableDiscardRollsBackWithTheSavepoint: a handler's changes in memory go with
// its savepoint, as the runtime's careful mode does it; the other events' stay.
func TestTableDiscardRollsBackWithTheSavepoint(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	step := func(i int, v any, wantErr bool) {
		sp := "sp" + string(rune('0'+i))
		w.Exec("SAVEPOINT " + sp)
		require.NoError(t, w.Flush(ctx))
		e, err := b.reg.New("t", "s", v)
		require.NoError(t, err)
		d, err := b.reg.Decode(e)
		require.NoError(t, err)
		err = b.p.Apply(ctx, w, d)
		if err == nil {
			err = w.Flush(ctx)
		}
		if !wantErr {
			require.NoError(t, err)
			w.Exec("RELEASE SAVEPOINT " + sp)
			return
		}
		require.Error(t, err)
		w.Discard()
		w.Exec("ROLLBACK TO SAVEPOINT " + sp)
		require.NoError(t, w.Flush(ctx))
	}
	step(0, deposited{ID: "x", Owner: "o", Amount: 5}, false)
	// The handler changes nothing when it fails: Put comes after the check. Make one
	// that puts and then fails at the write: a balance over int4 fails the upsert.
	step(1, deposited{ID: "x", Owner: "o", Amount: 1 << 40}, true)
	step(2, deposited{ID: "x", Owner: "o", Amount: 2}, false)
	require.NoError(t, w.Flush(ctx))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, map[string]int{"x": 7}, balances(t, pool))
}

// TestTableExecIsABarrier: from a handler, Exec sees the rows changed before it, and
// the rows read after it are what it left.
func TestTableExecIsABarrier(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	reg := events.NewRegistry()
	events.Register[deposited](reg, "Deposited")
	p, err := readmodel.New("barrier", 1, reg)
	require.NoError(t, err)
	accounts := readmodel.NewTable[string, account](p, "accounts", "id")
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v deposited) error {
		if v.Amount == 0 { // the slow path: double every balance of the owner
			w.Exec(`UPDATE accounts SET balance = balance * 2 WHERE owner = $1`, v.Owner)
			return nil
		}
		a, _, err := accounts.Get(ctx, w, v.ID)
		if err != nil {
			return err
		}
		a.ID, a.Owner, a.Balance = v.ID, v.Owner, a.Balance+v.Amount
		accounts.Put(w, a)
		return nil
	})
	ctx := context.Background()
	_, err = pool.Exec(ctx, `CREATE TABLE accounts (id text PRIMARY KEY, owner text NOT NULL, balance int NOT NULL, closed_at timestamptz)`)
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	for _, v := range []deposited{{"a", "o", 1}, {"b", "o", 2}, {"", "o", 0}, {"a", "o", 10}} {
		e, err := reg.New("t", "s", v)
		require.NoError(t, err)
		d, err := reg.Decode(e)
		require.NoError(t, err)
		require.NoError(t, p.Apply(ctx, w, d))
	}
	require.NoError(t, w.Flush(ctx))
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, map[string]int{"a": 12, "b": 4}, balances(t, pool))
}

// TestSortedWritesDoNotDeadlock: two transactions touch the same two rows in
// opposite orders. Statement by statement (Exec) PostgreSQL finds a deadlock; with
// the row API each writes its rows in key order at commit, and the second waits for
// the first.
func TestSortedWritesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO accounts VALUES ('k1', 'o', 0), ('k2', 'o', 0)`)
	require.NoError(t, err)

	// Exec, flushed per event the way careful mode or a reading handler does.
	run := func(order []string, step chan struct{}, next chan struct{}) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
		for i, id := range order {
			w.Exec(`UPDATE accounts SET balance = balance + 1 WHERE id = $1`, id)
			if err := w.Flush(ctx); err != nil {
				return err
			}
			if i == 0 {
				close(step)
				<-next
			}
		}
		return tx.Commit(ctx)
	}
	s1, s2 := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 2)
	go func() { errs <- run([]string{"k1", "k2"}, s1, s2) }()
	go func() { errs <- run([]string{"k2", "k1"}, s2, s1) }()
	e1, e2 := <-errs, <-errs
	require.True(t, isDeadlock(errors.Join(e1, e2)), "Exec in opposite orders: %v, %v", e1, e2)

	// The row API: the same rows in opposite orders, twenty times two transactions
	// at once. Each locks its keys as it loads them, in key order (new ones too once
	// the table has seen a race), and writes them in key order: no deadlock, no
	// update lost, and at most one retry, though every run creates a new row in both
	// transactions at once.
	decode := func(vals ...any) []events.Decoded { return b.decode(t, vals...) }
	var raced atomic.Int64
	retrying := func(ds []events.Decoded) error {
		for {
			err := b.applyDecoded(pool, ds)
			if !readmodel.IsTransient(err) || isDeadlock(err) {
				return err
			}
			raced.Add(1)
		}
	}
	for i := range 20 {
		fresh := "n" + string(rune('a'+i))
		d1 := decode(deposited{"k1", "o", 1}, deposited{"k2", "o", 1}, deposited{fresh, "o", 1})
		d2 := decode(deposited{fresh, "o", 1}, deposited{"k2", "o", 1}, deposited{"k1", "o", 1})
		go func() { errs <- retrying(d1) }()
		go func() { errs <- retrying(d2) }()
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
	}
	// Both runs of the first round may read the new key as absent; the loser's
	// insert skips the winner's row and its batch is retried, once: from then on the
	// table locks new keys at load, and no later round races.
	require.LessOrEqual(t, raced.Load(), int64(1), "batches retried after a race on a new row: after the first race the table locks new keys")
	got := balances(t, pool)
	require.Equal(t, 41, got["k1"])
	require.Equal(t, 41, got["k2"])
	for i := range 20 {
		require.Equal(t, 2, got["n"+string(rune('a'+i))])
	}
}

func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// A key loaded as absent has no row to lock. Two batches creating the same new key
// race: the second's insert waits for the first's, then skips the row the first
// committed and fails as stale (a transient error: the runtime retries the batch),
// never overwriting it. From then on the table locks new keys at load: the next
// batch wanting a key another holds waits at its load, then reads the committed row
// and updates it, with no retry. Only the absent keys take an advisory lock (a slot
// of the server's shared lock table); the rows that exist are locked by the read.
func TestARaceOnANewKeyIsRetriedThenNewKeysAreLocked(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	decode := func(vals ...any) []events.Decoded { return b.decode(t, vals...) }
	// hold applies ds in a transaction it leaves open, and returns it.
	hold := func(ds []events.Decoded) pgx.Tx {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		w := readmodel.NewWriter(tx)
		require.NoError(t, b.p.Preload(ctx, w, ds))
		for _, d := range ds {
			require.NoError(t, b.p.Apply(ctx, w, d))
		}
		require.NoError(t, w.Flush(ctx))
		return tx
	}
	waits := func(second chan error) {
		select {
		case err := <-second:
			t.Fatalf("the second batch ended (%v) while the first held the new key", err)
		case <-time.After(300 * time.Millisecond):
		}
	}

	// Before any race: the second batch waits at its insert, then fails as stale.
	tx := hold(decode(deposited{ID: "fresh", Owner: "o1", Amount: 1}))
	second := make(chan error, 1)
	go func() { second <- b.applyDecoded(pool, decode(deposited{ID: "fresh", Owner: "o2", Amount: 1})) }()
	waits(second)
	require.NoError(t, tx.Commit(ctx))
	err := <-second
	require.True(t, readmodel.IsTransient(err), "a race on a new key is transient: %v", err)
	require.ErrorContains(t, err, "table accounts: key fresh, loaded as absent, was inserted meanwhile")
	require.Equal(t, "o1", ownerOf(t, pool, "fresh"), "the first batch's row, the second's write rolled back")
	require.Equal(t, 1, balances(t, pool)["fresh"], "the first deposit, not overwritten")
	require.NoError(t, b.applyDecoded(pool, decode(deposited{ID: "fresh", Owner: "o2", Amount: 1})), "the retry")
	require.Equal(t, 2, balances(t, pool)["fresh"], "both deposits, none lost")

	// After the race: new keys are locked at load, and only they are.
	tx = hold(decode(deposited{ID: "fresh", Owner: "o1", Amount: 1}, deposited{ID: "fresh2", Owner: "o1", Amount: 1}))
	var advisory int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1`,
		tx.Conn().PgConn().PID()).Scan(&advisory))
	require.Equal(t, 1, advisory, "one advisory lock: the new key, not the row that exists")
	go func() { second <- b.applyDecoded(pool, decode(deposited{ID: "fresh2", Owner: "o2", Amount: 1})) }()
	waits(second)
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-second, "the second batch waited at its load and read the committed row: no retry")
	got := balances(t, pool)
	require.Equal(t, 3, got["fresh"])
	require.Equal(t, 2, got["fresh2"], "both deposits, none lost")

	// However many new keys a batch loads, its advisory locks are at most 64.
	var many []any
	for i := range 300 {
		many = append(many, deposited{ID: fmt.Sprintf("new%03d", i), Owner: "o1", Amount: 1})
	}
	tx = hold(decode(many...))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1`,
		tx.Conn().PgConn().PID()).Scan(&advisory))
	require.LessOrEqual(t, advisory, 64, "300 new keys, 64 buckets")
	require.Greater(t, advisory, 32, "300 new keys spread over the buckets")
	require.NoError(t, tx.Rollback(ctx))
}

// A key read as absent, deleted, then put again is still an insert: if another
// transaction inserted the key meanwhile, the batch is stale, and the other's row
// is neither deleted nor overwritten.
func TestAKeyReadAbsentThenDeletedAndPutIsStillAnInsert(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	_, ok, err := b.accounts.Get(ctx, w, "k")
	require.NoError(t, err)
	require.False(t, ok)
	// Meanwhile another batch creates k.
	_, err = pool.Exec(ctx, `INSERT INTO accounts VALUES ('k', 'other', 7)`)
	require.NoError(t, err)
	b.accounts.Delete(w, "k")
	require.NoError(t, w.Flush(ctx))
	b.accounts.Put(w, account{ID: "k", Owner: "mine", Balance: 1})
	err = w.Flush(ctx)
	require.True(t, readmodel.IsTransient(err), "stale: %v", err)
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, "other", ownerOf(t, pool, "k"))
	require.Equal(t, 7, balances(t, pool)["k"])
}

// TestAStaleNewKeyCannotCommitWithItsCommit: the runtime sends a batch's writes
// with its COMMIT in one round trip (rmhook.Commit), so a stale new key must fail
// in PostgreSQL, not in the client after the fact: the error is transient and names
// the key, and nothing of the batch is committed, its other rows neither.
func TestAStaleNewKeyCannotCommitWithItsCommit(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	_, ok, err := b.accounts.Get(ctx, w, "k")
	require.NoError(t, err)
	require.False(t, ok)
	_, err = pool.Exec(ctx, `INSERT INTO accounts VALUES ('k', 'other', 7)`) // meanwhile, another batch
	require.NoError(t, err)
	b.accounts.Put(w, account{ID: "j", Owner: "mine", Balance: 1})
	b.accounts.Put(w, account{ID: "k", Owner: "mine", Balance: 1})
	err = rmhook.Commit(ctx, w)
	require.True(t, readmodel.IsTransient(err), "stale: %v", err)
	require.ErrorContains(t, err, "key k, loaded as absent, was inserted meanwhile")
	require.NotEqual(t, byte('I'), tx.Conn().PgConn().TxStatus(), "the COMMIT was skipped: the transaction failed, it did not end")
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, "other", ownerOf(t, pool, "k"))
	require.NotContains(t, balances(t, pool), "j", "the batch's other row was not committed")
}

// TestTableAddSumsWithoutReading: Add sums deltas in memory and writes them at
// commit in one statement per table, reading nothing; a row read in the batch gets
// the deltas in memory; Put and Delete replace what was added; an Add before a
// DeleteWhere is deleted with the row, one after it is kept.
func TestTableAddSumsWithoutReading(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	tp, c := traced(t, pool)
	in := func(fn func(w *readmodel.Writer)) {
		tx, err := tp.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
		fn(w)
		require.NoError(t, w.Flush(ctx))
		require.NoError(t, tx.Commit(ctx))
	}

	c.take("")
	in(func(w *readmodel.Writer) {
		b.owners.Add(w, owner{"ann", 2})
		b.owners.Add(w, owner{"bob", 1})
		b.owners.Add(w, owner{"ann", 3})
	})
	sqls, _ := c.take("")
	require.Zero(t, countPrefix(sqls, "SELECT"), "Add reads nothing: %q", sqls)
	require.Equal(t, 1, countPrefix(sqls, "INSERT INTO owners"), "one write: %q", sqls)
	require.Contains(t, writeOf(sqls, "owners"), "accounts = owners.accounts + EXCLUDED.accounts")
	require.Equal(t, map[string]int{"ann": 5, "bob": 1}, owners(t, pool), "absent rows inserted as the deltas' sum")

	in(func(w *readmodel.Writer) {
		b.owners.Add(w, owner{"ann", 1})
		o, ok, err := b.owners.Get(ctx, w, "ann")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, 6, o.Accounts, "read after an Add: the stored row plus the delta")
		_, err = b.owners.Update(ctx, w, "ann", func(o *owner) { o.Accounts += 10 })
		require.NoError(t, err)
		b.owners.Add(w, owner{"ann", 1}) // in memory now
		b.owners.Add(w, owner{"bob", 5})
		b.owners.Put(w, owner{"bob", 100}) // replaces what was added
		b.owners.Add(w, owner{"cy", 7})
		b.owners.Delete(w, "cy")
		b.owners.Add(w, owner{"dee", 1})
		d, ok, err := b.owners.Get(ctx, w, "dee")
		require.NoError(t, err)
		require.True(t, ok, "an absent row added to exists in the batch")
		require.Equal(t, 1, d.Accounts)
	})
	require.Equal(t, map[string]int{"ann": 17, "bob": 100, "dee": 1}, owners(t, pool))

	in(func(w *readmodel.Writer) {
		b.accounts.Add(w, account{ID: "x", Owner: "zed", Balance: 5})
		b.accounts.DeleteWhere(w, "owner", "zed")
		b.accounts.Add(w, account{ID: "y", Owner: "zed", Balance: 1})
	})
	require.Equal(t, map[string]int{"y": 1}, balances(t, pool), "added before DeleteWhere: deleted; after: kept")

	// Added between two DeleteWheres of the same column: only the second may take it.
	in(func(w *readmodel.Writer) {
		b.accounts.Add(w, account{ID: "z", Owner: "amy", Balance: 2})
		b.accounts.DeleteWhere(w, "owner", "amy")
		b.accounts.Add(w, account{ID: "z2", Owner: "amy", Balance: 3})
		b.accounts.DeleteWhere(w, "owner", "bo")
	})
	got := balances(t, pool)
	require.NotContains(t, got, "z", "added before the DeleteWhere of its owner: deleted")
	require.Equal(t, 3, got["z2"], "added after the DeleteWhere of its owner: kept")

	require.PanicsWithValue(t, `readmodel: table tags: Add: no field of the row type readmodel_test.tag is tagged db:"column,sum"`, func() {
		p, err := readmodel.New("tags", 1, b.reg)
		require.NoError(t, err)
		tags := readmodel.NewTable[string, tag](p, "tags", "name")
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		tags.Add(readmodel.NewWriter(tx), tag{Name: "a"})
	})
}

type tag struct {
	Name  string `db:"name"`
	Label string `db:"label"`
	Rank  int    `db:"rank"` // a number, not a sum: Add does not add to it
}

// TestTableAddFromManyTransactionsAtOnce: transactions adding to the same rows in
// opposite orders, at once, none reading: every delta counted, no deadlock, and
// no advisory lock taken.
func TestTableAddFromManyTransactionsAtOnce(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	b := newBank(t, pool)
	ctx := context.Background()
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprintf("o%02d", i))
	}
	run := func(order []string) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
		for _, n := range order {
			b.owners.Add(w, owner{n, 1})
		}
		if err := w.Flush(ctx); err != nil {
			return err
		}
		var advisory int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&advisory); err != nil {
			return err
		}
		if advisory != 0 {
			return fmt.Errorf("%d advisory locks", advisory)
		}
		return tx.Commit(ctx)
	}
	reversed := slices.Clone(names)
	slices.Reverse(reversed)
	errs := make(chan error, 2)
	for range 10 {
		go func() { errs <- run(names) }()
		go func() { errs <- run(reversed) }()
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
	}
	got := owners(t, pool)
	for _, n := range names {
		require.Equal(t, 20, got[n], n)
	}
}
