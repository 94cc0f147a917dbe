package projector_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// foldFigures returns how many folds committed, with how many reads in all, and how
// many folds failed, from the runner's metrics.
func foldFigures(t *testing.T, reg *prometheus.Registry) (folds, reads, failed int) {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "projector_fold_reads":
				folds += int(m.GetHistogram().GetSampleCount())
				reads += int(m.GetHistogram().GetSampleSum())
			case "projector_folds_failed_total":
				failed += int(m.GetCounter().GetValue())
			}
		}
	}
	return folds, reads, failed
}

// replayOrders replays f's log into a new orders projection (row API), 100 events a
// read, with foldRows as Config.FoldRows, and returns it with the runner's metrics.
func replayOrders(t *testing.T, f *fixture, foldRows int) (*readmodel.Projection, *prometheus.Registry) {
	t.Helper()
	p := ordersProjection(t, f, true)
	cfg := f.config(p)
	cfg.BatchSize, cfg.FoldRows = 100, foldRows
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, 2*time.Minute)
	stop()
	return p, reg
}

// TestAReplayFoldsReadsAndEqualsTheLog: a partition with many reads at hand folds
// them into few transactions, and the read model is the fold of the log all the
// same; with folds off, every read is a transaction of its own.
func TestAReplayFoldsReadsAndEqualsTheLog(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	want := placeOrders(t, f, 6000, 20, nil)
	for _, rows := range []int{0, -1} {
		p, reg := replayOrders(t, f, rows)
		require.Equal(t, want, customerTotals(t, f, p))
		require.Equal(t, 6000, count(t, f, p.Schema(), "orders", ""))
		folds, reads, failed := foldFigures(t, reg)
		t.Logf("FoldRows %d: %d folds of %d reads, %d failed", rows, folds, reads, failed)
		require.Zero(t, failed)
		if rows == 0 {
			require.Positive(t, folds)
			require.Greater(t, reads, 2*folds, "folds of more than two reads on average")
		} else {
			require.Zero(t, folds)
		}
	}
}

// TestAFoldThatFailsIsAppliedAgainBatchByBatch: an event whose handler fails in a
// later read of a fold rolls the fold back; its events are read again and applied
// batch by batch, where the failing ones park alone and the rest is written once.
func TestAFoldThatFailsIsAppliedAgainBatchByBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	want := placeOrders(t, f, 3000, 5, map[int]bool{17: true, 1450: true})
	p, reg := replayOrders(t, f, 0)
	require.Equal(t, want, customerTotals(t, f, p))
	require.Equal(t, 2998, count(t, f, p.Schema(), "orders", ""))
	require.Equal(t, 2, count(t, f, f.schema, "parked", "projection = '"+p.Name()+"' AND state = 'parked'"))
	folds, _, failed := foldFigures(t, reg)
	require.Positive(t, folds)
	require.Positive(t, failed, "the folds holding the failing events were rolled back")
}

// TestAFoldDoesNotWaitForARowAnotherTransactionHolds: a fold's later read whose row
// another transaction holds ends the fold before that read (it commits what it
// has) instead of waiting with its own rows locked; the read then waits alone,
// and applies once the row is free. Waiting inside the fold would hold the whole
// fold back, and rows that other partitions wait for. With Exec handlers, whose
// statements go with the next read's first round trip, the wait fails the fold,
// which is applied again batch by batch: nothing of it is lost.
func TestAFoldDoesNotWaitForARowAnotherTransactionHolds(t *testing.T) {
	t.Parallel()
	for _, rows := range []bool{true, false} {
		t.Run(fmt.Sprintf("rows=%v", rows), func(t *testing.T) {
			t.Parallel()
			foldAroundAHeldRow(t, rows)
		})
	}
}

func foldAroundAHeldRow(t *testing.T, rows bool) {
	ctx := context.Background()
	f := newFixture(t, 1)
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	order := func(i int, customer string) events.Event {
		e, err := reg.New("shop", fmt.Sprintf("o%05d", i), orderPlaced{OrderID: fmt.Sprintf("o%05d", i), Customer: customer, Amount: 1})
		require.NoError(t, err)
		return e
	}
	// First the customers' rows, applied and stored.
	f.publish(order(0, "held"), order(1, "free"))
	p := ordersProjection(t, f, rows)
	cfg := f.config(p)
	cfg.BatchSize = 100
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	start := f.stored(p)[0]

	// Another transaction holds the row of customer "held".
	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT FROM `+pgx.Identifier{p.Schema(), "customers"}.Sanitize()+` WHERE customer = 'held' FOR UPDATE`)
	require.NoError(t, err)

	// A first read of orders of "free", then reads with orders of "held".
	var evs []events.Event
	for i := range 400 {
		c := "free"
		if i >= 100 {
			c = "held"
		}
		evs = append(evs, order(2+i, c))
	}
	f.publish(evs...)
	_, stop = f.start(cfg)
	defer stop()
	testenv.WaitFor(t, 30*time.Second, "the first read to commit while the row is held", func() bool {
		return f.stored(p)[0] > start
	})
	require.Less(t, f.stored(p)[0], start+400, "nothing of customer held applied while its row is held")
	require.NoError(t, tx.Commit(ctx))
	f.waitCaughtUp(p, time.Minute)
	stop()
	got := customerTotals(t, f, p)
	require.Equal(t, [2]int{301, 301}, got["held"])
	require.Equal(t, [2]int{101, 101}, got["free"])
}

// TestAFoldReadWaitingForARowHoldsNoReadSlot: a fold whose first read finds a row
// held by another transaction gives the fold up and applies the read as a batch,
// which waits outside the fold reads' slots: with one slot, the other partition
// replays to its end meanwhile. A read waiting inside its slot would hold every
// partition's replay behind one row.
func TestAFoldReadWaitingForARowHoldsNoReadSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, 2)
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	// Orders of customer c, n of them, whose ids all go to partition part.
	next := 0
	orders := func(n, part int, c string) []events.Event {
		var evs []events.Event
		for len(evs) < n {
			id := fmt.Sprintf("o%06d", next)
			next++
			if eventlog.Murmur2Partition([]byte(id), 2) != part {
				continue
			}
			e, err := reg.New("shop", id, orderPlaced{OrderID: id, Customer: c, Amount: 1})
			require.NoError(t, err)
			evs = append(evs, e)
		}
		return evs
	}
	f.publish(append(orders(1, 0, "held"), orders(1, 1, "free")...)...)
	p := ordersProjection(t, f, true)
	cfg := f.config(p)
	cfg.BatchSize, cfg.FoldReadsAtOnce = 100, 1
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	start := f.stored(p)

	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT FROM `+pgx.Identifier{p.Schema(), "customers"}.Sanitize()+` WHERE customer = 'held' FOR UPDATE`)
	require.NoError(t, err)

	// Four reads at hand in each partition: both replay in folds.
	f.publish(append(orders(400, 0, "held"), orders(400, 1, "free")...)...)
	_, stop = f.start(cfg)
	defer stop()
	testenv.WaitFor(t, 30*time.Second, "partition 1 to replay to its end while partition 0 waits for a row", func() bool {
		return f.stored(p)[1] == start[1]+400
	})
	require.Equal(t, start[0], f.stored(p)[0], "nothing of customer held applied while its row is held")
	require.NoError(t, tx.Commit(ctx))
	f.waitCaughtUp(p, time.Minute)
	stop()
	got := customerTotals(t, f, p)
	require.Equal(t, [2]int{401, 401}, got["held"])
	require.Equal(t, [2]int{401, 401}, got["free"])
}

// TestAFoldsCommitWaitsForARowItsLastReadWrites: the statements a fold's last read
// queued (Exec handlers' here) go with its commit, which waits for a row another
// transaction holds, as a batch's would, instead of failing the whole fold at the
// reads' lock timeout.
func TestAFoldsCommitWaitsForARowItsLastReadWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, 1)
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	order := func(i int, customer string) events.Event {
		e, err := reg.New("shop", fmt.Sprintf("o%05d", i), orderPlaced{OrderID: fmt.Sprintf("o%05d", i), Customer: customer, Amount: 1})
		require.NoError(t, err)
		return e
	}
	f.publish(order(0, "held"), order(1, "free"))
	p := ordersProjection(t, f, false)
	cfg := f.config(p)
	cfg.BatchSize = 100
	promReg := prometheus.NewRegistry()
	cfg.Registerer = promReg
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	start := f.stored(p)[0]

	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT FROM `+pgx.Identifier{p.Schema(), "customers"}.Sanitize()+` WHERE customer = 'held' FOR UPDATE`)
	require.NoError(t, err)

	// Two reads: orders of "free", then the last, of "held".
	var evs []events.Event
	for i := range 200 {
		c := "free"
		if i >= 100 {
			c = "held"
		}
		evs = append(evs, order(2+i, c))
	}
	f.publish(evs...)
	promReg = prometheus.NewRegistry()
	cfg.Registerer = promReg
	_, stop = f.start(cfg)
	defer stop()
	time.Sleep(time.Second) // the fold's commit waits for the row meanwhile
	require.Equal(t, start, f.stored(p)[0], "nothing committed while the row is held")
	require.NoError(t, tx.Commit(ctx))
	f.waitCaughtUp(p, time.Minute)
	stop()
	folds, reads, failed := foldFigures(t, promReg)
	require.Zero(t, failed, "the fold waited at its commit instead of failing")
	require.Equal(t, [2]int{1, 2}, [2]int{folds, reads}, "one fold of both reads")
	got := customerTotals(t, f, p)
	require.Equal(t, [2]int{101, 101}, got["held"])
	require.Equal(t, [2]int{101, 101}, got["free"])
}

// TestAFencedFoldCommitsNothing: a fold whose partition another member claimed
// while it read (its position's generation changed) writes none of its rows: the
// compare-and-set of its position goes before its COMMIT's round trip, since a
// fenced one updates no row, which would not stop a COMMIT sent with it.
func TestAFencedFoldCommitsNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	placeOrders(t, f, 2, 2, nil)
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	p, err := readmodel.New(f.projectionName(), 1, reg)
	require.NoError(t, err)
	p.Migrate(`CREATE TABLE orders (order_id text PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`)
	orders := readmodel.NewTable[string, orderRow](p, "orders", "order_id")
	var fence sync.Once
	fenced := make(chan struct{})
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v orderPlaced) error {
		orders.Put(w, orderRow{OrderID: v.OrderID, Customer: v.Customer, Amount: v.Amount})
		if v.OrderID == "o00150" { // in the fold's second read: another member claims the partition
			var err error
			fence.Do(func() {
				_, err = f.pool.Exec(ctx, `UPDATE `+pgx.Identifier{f.schema, "offsets"}.Sanitize()+
					` SET generation = generation + 1000 WHERE projection = $1`, p.Name())
				close(fenced)
			})
			return err
		}
		return nil
	})
	cfg := f.config(p)
	cfg.BatchSize = 100
	promReg := prometheus.NewRegistry()
	cfg.Registerer = promReg
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	require.Equal(t, 2, count(t, f, p.Schema(), "orders", ""))

	var evs []events.Event
	for i := 100; i < 400; i++ {
		e, err := reg.New("shop", fmt.Sprintf("o%05d", i), orderPlaced{OrderID: fmt.Sprintf("o%05d", i), Customer: "c", Amount: 1})
		require.NoError(t, err)
		evs = append(evs, e)
	}
	f.publish(evs...)
	_, stop = f.start(cfg)
	defer stop()
	select {
	case <-fenced:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler never ran for o00150")
	}
	testenv.WaitFor(t, 30*time.Second, "the runner to find its position fenced", func() bool {
		fams, err := promReg.Gather()
		require.NoError(t, err)
		for _, fam := range fams {
			if fam.GetName() == "projector_fenced_total" {
				for _, m := range fam.GetMetric() {
					if m.GetCounter().GetValue() > 0 {
						return true
					}
				}
			}
		}
		return false
	})
	stop()
	require.Equal(t, 2, count(t, f, p.Schema(), "orders", ""), "nothing of the fenced fold was written")
}
