package projector_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// orderPlaced is an order of a customer: orders are keyed by order id, so one
// customer's orders are spread over every partition, and the customers table is
// shared by them.
type orderPlaced struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Amount   int    `json:"amount"`
	Fail     bool   `json:"fail,omitempty"` // the handler fails after it changed rows
}

type orderRow struct {
	OrderID  string `db:"order_id"`
	Customer string `db:"customer"`
	Amount   int    `db:"amount"`
}

type customerRow struct {
	Customer string `db:"customer"`
	Total    int    `db:"total"`
	Orders   int    `db:"orders"`
}

// ordersProjection folds orders into orders and customers (totals): with the row
// API, or with Exec statements, one per change, in event order.
func ordersProjection(t *testing.T, f *fixture, rows bool) *readmodel.Projection {
	t.Helper()
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	p, err := readmodel.New(f.projectionName(), 1, reg)
	require.NoError(t, err)
	p.Migrate(`CREATE TABLE orders (order_id text PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`,
		`CREATE TABLE customers (customer text PRIMARY KEY, total int NOT NULL, orders int NOT NULL)`)
	if !rows {
		readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v orderPlaced) error {
			w.Exec(`INSERT INTO orders VALUES ($1, $2, $3)`, v.OrderID, v.Customer, v.Amount)
			w.Exec(`INSERT INTO customers VALUES ($1, $2, 1) ON CONFLICT (customer)
				DO UPDATE SET total = customers.total + EXCLUDED.total, orders = customers.orders + 1`, v.Customer, v.Amount)
			return nil
		})
		return p
	}
	orders := readmodel.NewTable[string, orderRow](p, "orders", "order_id")
	customers := readmodel.NewTable[string, customerRow](p, "customers", "customer")
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v orderPlaced) error {
		c, _, err := customers.Get(ctx, w, v.Customer)
		if err != nil {
			return err
		}
		c.Customer, c.Total, c.Orders = v.Customer, c.Total+v.Amount, c.Orders+1
		customers.Put(w, c)
		orders.Put(w, orderRow{OrderID: v.OrderID, Customer: v.Customer, Amount: v.Amount})
		if v.Fail {
			return fmt.Errorf("order %s refused", v.OrderID)
		}
		return nil
	}, readmodel.Loads(customers, func(v orderPlaced) string { return v.Customer }))
	return p
}

// placeOrders publishes n orders over customers, the ones in fail failing, and
// returns the totals the read model must hold.
func placeOrders(t *testing.T, f *fixture, n, customers int, fail map[int]bool) map[string][2]int {
	t.Helper()
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string][2]int{}
	var evs []events.Event
	for i := range n {
		o := orderPlaced{OrderID: fmt.Sprintf("o%05d", i), Customer: fmt.Sprintf("c%02d", rng.IntN(customers)), Amount: 1 + rng.IntN(100), Fail: fail[i]}
		e, err := reg.New("shop", o.OrderID, o)
		require.NoError(t, err)
		evs = append(evs, e)
		if !o.Fail {
			c := want[o.Customer]
			want[o.Customer] = [2]int{c[0] + o.Amount, c[1] + 1}
		}
	}
	for i := 0; i < n; i += 5000 {
		f.publish(evs[i:min(i+5000, n)]...)
	}
	return want
}

// count counts the rows of schema.table where cond holds (all of them when cond is "").
func count(t *testing.T, f *fixture, schema, table, cond string) int {
	t.Helper()
	q := `SELECT count(*) FROM ` + pgx.Identifier{schema, table}.Sanitize()
	if cond != "" {
		q += " WHERE " + cond
	}
	var n int
	require.NoError(t, f.pool.QueryRow(context.Background(), q).Scan(&n))
	return n
}

func customerTotals(t *testing.T, f *fixture, p *readmodel.Projection) map[string][2]int {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT customer, total, orders FROM `+pgx.Identifier{p.Schema(), "customers"}.Sanitize())
	require.NoError(t, err)
	got := map[string][2]int{}
	for rows.Next() {
		var c string
		var total, n int
		require.NoError(t, rows.Scan(&c, &total, &n))
		got[c] = [2]int{total, n}
	}
	require.NoError(t, rows.Err())
	return got
}

// TestSharedRowsDoNotDeadlockWithTheRowAPI: two partitions fold orders into one
// customers table, in batches of 500. With Exec each transaction updates the
// customers in event order, and two partitions' transactions take their locks in
// different orders: PostgreSQL finds deadlocks, the runtime splits the batches and
// retries them, and the totals still come out right. With the row API every
// transaction locks and writes customers in key order: no deadlock.
func TestSharedRowsDoNotDeadlockWithTheRowAPI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	want := placeOrders(t, f, 20000, 10, nil)
	for _, rows := range []bool{false, true} {
		p := ordersProjection(t, f, rows)
		cfg := f.config(p)
		cfg.BatchSize = 500
		r, stop := f.start(cfg)
		f.waitCaughtUp(p, 3*time.Minute)
		stop()
		require.Equal(t, want, customerTotals(t, f, p))
		deadlocks := r.Status().Deadlocks
		t.Logf("row API %v: %d deadlocks, each batch split and retried", rows, deadlocks)
		if rows {
			require.Zero(t, deadlocks)
		}
	}
}

// TestRowAPICarefulModeDropsAParkedEventsRows: an event whose handler changed rows
// and then failed parks, and none of its changes are written; the rest of its
// batch is, and a later batch reads what was written, not what was discarded.
func TestRowAPICarefulModeDropsAParkedEventsRows(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	want := placeOrders(t, f, 300, 5, map[int]bool{17: true, 150: true})
	p := ordersProjection(t, f, true)
	cfg := f.config(p)
	cfg.BatchSize = 200
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	require.Equal(t, want, customerTotals(t, f, p))
	require.Equal(t, 298, count(t, f, p.Schema(), "orders", ""))
	require.Equal(t, 2, count(t, f, f.schema, "parked", "projection = '"+p.Name()+"' AND state = 'parked'"))
}

// statements counts the statements a pool sends, by their start, and the round
// trips of each batch transaction (from its BEGIN, which sets the search path, to
// its commit or rollback).
type statements struct {
	mu    sync.Mutex
	n     map[string]int
	open  map[*pgx.Conn]int // round trips so far of the transaction on a connection
	trips []int             // round trips of each transaction that committed
}

func (s *statements) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.add(d.SQL)
	s.trip(c, d.SQL)
	return ctx
}

// trip counts a round trip on c: sql is a query's, or a pgx batch's first.
func (s *statements) trip(c *pgx.Conn, sql string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sql == "BEGIN" { // a batch transaction opens in its first round trip
		s.open[c] = 0
	}
	n, ok := s.open[c]
	if !ok {
		return
	}
	s.open[c] = n + 1
	switch strings.ToUpper(sql) {
	case "COMMIT":
		s.end(c)
	case "ROLLBACK": // a batch retried: only committed ones count
		delete(s.open, c)
	}
}

// end records the round trips of the transaction on c, which committed.
func (s *statements) end(c *pgx.Conn) {
	if n, ok := s.open[c]; ok {
		s.trips = append(s.trips, n)
		delete(s.open, c)
	}
}
func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (s *statements) TraceBatchStart(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	first := ""
	if q := d.Batch.QueuedQueries; len(q) > 0 {
		first = q[0].SQL
	}
	s.trip(c, first)
	return ctx
}
func (s *statements) TraceBatchQuery(_ context.Context, c *pgx.Conn, d pgx.TraceBatchQueryData) {
	s.add(d.SQL)
	if d.SQL == "COMMIT" && d.Err == nil { // the last statement of the batch's last round trip
		s.mu.Lock()
		s.end(c)
		s.mu.Unlock()
	}
}
func (s *statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (s *statements) add(sql string) {
	sql = strings.Join(strings.Fields(sql), " ")
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(sql, "SELECT ctid,") && strings.Contains(sql, ".customers WHERE") {
		s.n["load customers"]++ // named in the projection's schema (see batchTx)
	}
	for _, k := range []string{"WITH w AS (INSERT INTO customers", "WITH w AS (INSERT INTO orders", "UPDATE"} {
		if strings.HasPrefix(sql, k) && (k != "UPDATE" || strings.Contains(sql, "consumed = consumed +")) {
			s.n[k]++
		}
	}
}

// TestRowAPIStatementsPerBatch: per partition batch, one load and one write per
// table, whatever the batch's size, counted against the batches committed (the offset
// writes). Both partitions may create the same new customer at the start: each may
// lose one such race once and retry its batch (then the table locks its new keys).
func TestRowAPIStatementsPerBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	want := placeOrders(t, f, 4000, 50, nil)
	p := ordersProjection(t, f, true)
	s := &statements{n: map[string]int{}, open: map[*pgx.Conn]int{}}
	pc := f.pool.Config()
	pc.ConnConfig.Tracer = s
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	cfg := f.config(p)
	cfg.Pool = pool
	cfg.FoldRows = projector.FoldRowsOff // a fold takes one round trip more per read it folds
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, 2*time.Minute)
	stop()
	require.Equal(t, want, customerTotals(t, f, p))
	s.mu.Lock()
	defer s.mu.Unlock()
	batches := s.n["UPDATE"]
	t.Logf("4000 events: %d batches (offset writes), statements %v", batches, s.n)
	require.Positive(t, batches)
	const races = 2
	require.Positive(t, s.n["load customers"])
	require.LessOrEqual(t, s.n["load customers"], batches+races, "at most one load of customers per batch")
	require.LessOrEqual(t, s.n["WITH w AS (INSERT INTO customers"], batches+races, "at most one write of customers per batch")
	require.LessOrEqual(t, s.n["WITH w AS (INSERT INTO orders"], batches+races, "at most one write of orders per batch")
	// Two round trips a batch: BEGIN with the search path, the loads, the sequence
	// marks and the fenced advance; the writes with the COMMIT.
	require.NotEmpty(t, s.trips)
	require.Equal(t, 2, slices.Max(s.trips), "round trips per batch transaction: %v", s.trips)
}

// TestDeadlockSplitsTheBatchAndCountsIt: a handler whose statement PostgreSQL
// fails as a deadlock victim (40P01, raised here for the first three attempts) has
// its batch split in halves, each retried after a backoff, every deadlock counted;
// every event is applied once, in order.
func TestDeadlockSplitsTheBatchAndCountsIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	reg := events.NewRegistry()
	events.Register[noted](reg, "Noted")
	p, err := readmodel.New(f.projectionName(), 1, reg)
	require.NoError(t, err)
	p.Migrate(`CREATE TABLE log (pos bigserial PRIMARY KEY, subject text NOT NULL, seq bigint NOT NULL, n int NOT NULL)`,
		`CREATE SEQUENCE victims`, // not transactional: counts the attempts across rollbacks
		`CREATE FUNCTION maybe_deadlock() RETURNS void LANGUAGE plpgsql AS $$
		 BEGIN
		   IF nextval('victims') <= 3 THEN
		     RAISE EXCEPTION 'deadlock detected (test)' USING ERRCODE = '40P01';
		   END IF;
		 END $$`)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v noted) error {
		w.Exec(`INSERT INTO log (subject, seq, n) VALUES ($1, $2, $3)`, e.Subject, int64(e.Sequence), v.N)
		if v.N == 1 || v.N == 25 {
			w.Exec(`SELECT maybe_deadlock()`)
		}
		return nil
	})
	var evs []events.Event
	for seq := uint64(1); seq <= 40; seq++ {
		evs = append(evs, note(t, "a", seq, false))
	}
	f.publish(evs...)
	cfg := f.config(p)
	cfg.BatchSize = 100
	r, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	require.Equal(t, map[string][]int64{"a": seqs(1, 40)}, appliedSeqs(t, f, p))
	require.EqualValues(t, 3, r.Status().Deadlocks)
}
