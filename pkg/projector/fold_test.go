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
	"github.com/projector/projector/pkg/projector"
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
// read, with foldRows as Config.FoldRows, and returns it with the runner's metrics;
// before, if given, sees the projection before the runner starts.
func replayOrders(t *testing.T, f *fixture, foldRows int, before ...func(*readmodel.Projection)) (*readmodel.Projection, *prometheus.Registry) {
	t.Helper()
	p := ordersProjection(t, f, true)
	for _, fn := range before {
		fn(p)
	}
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

// releaseHeld commits tx (releasing customer "held"), waits for p to catch up,
// stops the runner and checks both customers' totals: held and free orders of
// amount 1 each.
func releaseHeld(t *testing.T, f *fixture, p *readmodel.Projection, tx pgx.Tx, stop func(), held, free int) {
	t.Helper()
	require.NoError(t, tx.Commit(context.Background()))
	f.waitCaughtUp(p, time.Minute)
	stop()
	got := customerTotals(t, f, p)
	require.Equal(t, [2]int{held, held}, got["held"])
	require.Equal(t, [2]int{free, free}, got["free"])
}

// freeThenHeld returns n orders after the two holdCustomer's seeds take: the first
// hundred of customer "free", the rest of "held".
func freeThenHeld(order func(id, customer string) events.Event, n int) []events.Event {
	evs := make([]events.Event, n)
	for i := range evs {
		c := "free"
		if i >= 100 {
			c = "held"
		}
		evs[i] = order(fmt.Sprintf("o%05d", 2+i), c)
	}
	return evs
}

// orderMaker returns a maker of OrderPlaced events of amount 1.
func orderMaker(t *testing.T) func(id, customer string) events.Event {
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	return func(id, customer string) events.Event {
		e, err := reg.New("shop", id, orderPlaced{OrderID: id, Customer: customer, Amount: 1})
		require.NoError(t, err)
		return e
	}
}

// holdCustomer publishes seed, applies it with cfg's runner (ordersProjection,
// with rows or Exec handlers, and tune applied to its config), then holds customer
// "held"'s row in another transaction, rolled back when the test ends. It returns
// the projection, the config and the stored positions before the hold.
func holdCustomer(t *testing.T, f *fixture, rows bool, tune func(*projector.Config), seed ...events.Event) (*readmodel.Projection, projector.Config, map[int]int64, pgx.Tx) {
	t.Helper()
	ctx := context.Background()
	f.publish(seed...)
	p := ordersProjection(t, f, rows)
	cfg := f.config(p)
	cfg.BatchSize = 100
	tune(&cfg)
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	stop()
	start := f.stored(p)
	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	_, err = tx.Exec(ctx, `SELECT FROM `+pgx.Identifier{p.Schema(), "customers"}.Sanitize()+` WHERE customer = 'held' FOR UPDATE`)
	require.NoError(t, err)
	return p, cfg, start, tx
}

func foldAroundAHeldRow(t *testing.T, rows bool) {
	f := newFixture(t, 1)
	order := orderMaker(t)
	p, cfg, before, tx := holdCustomer(t, f, rows, func(*projector.Config) {}, order("o00000", "held"), order("o00001", "free"))
	start := before[0]

	// A first read of orders of "free", then reads with orders of "held".
	f.publish(freeThenHeld(order, 400)...)
	_, stop := f.start(cfg)
	defer stop()
	testenv.WaitFor(t, 30*time.Second, "the first read to commit while the row is held", func() bool {
		return f.stored(p)[0] > start
	})
	require.Less(t, f.stored(p)[0], start+400, "nothing of customer held applied while its row is held")
	releaseHeld(t, f, p, tx, stop, 301, 101)
}

// TestAFoldReadWaitingForARowHoldsNoReadSlot: a fold whose first read finds a row
// held by another transaction gives the fold up and applies the read as a batch,
// which waits outside the fold reads' slots: with one slot, the other partition
// replays to its end meanwhile. A read waiting inside its slot would hold every
// partition's replay behind one row.
func TestAFoldReadWaitingForARowHoldsNoReadSlot(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	order := orderMaker(t)
	// Orders of customer c, n of them, whose ids all go to partition part.
	next := 0
	orders := func(n, part int, c string) []events.Event {
		var evs []events.Event
		for len(evs) < n {
			id := fmt.Sprintf("o%06d", next)
			next++
			if eventlog.Murmur2Partition([]byte(id), 2) == part {
				evs = append(evs, order(id, c))
			}
		}
		return evs
	}
	p, cfg, start, tx := holdCustomer(t, f, true, func(c *projector.Config) { c.FoldReadsAtOnce = 1 },
		append(orders(1, 0, "held"), orders(1, 1, "free")...)...)

	// Four reads at hand in each partition: both replay in folds.
	f.publish(append(orders(400, 0, "held"), orders(400, 1, "free")...)...)
	_, stop := f.start(cfg)
	defer stop()
	testenv.WaitFor(t, 30*time.Second, "partition 1 to replay to its end while partition 0 waits for a row", func() bool {
		return f.stored(p)[1] == start[1]+400
	})
	require.Equal(t, start[0], f.stored(p)[0], "nothing of customer held applied while its row is held")
	releaseHeld(t, f, p, tx, stop, 401, 401)
}

// TestAFoldsCommitWaitsForARowItsLastReadWrites: the statements a fold's last read
// queued (Exec handlers' here) go with its commit, which waits for a row another
// transaction holds, as a batch's would, instead of failing the whole fold at the
// reads' lock timeout.
func TestAFoldsCommitWaitsForARowItsLastReadWrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	order := orderMaker(t)
	p, cfg, before, tx := holdCustomer(t, f, false, func(*projector.Config) {}, order("o00000", "held"), order("o00001", "free"))
	start := before[0]

	// Two reads: orders of "free", then the last, of "held".
	f.publish(freeThenHeld(order, 200)...)
	promReg := prometheus.NewRegistry()
	cfg.Registerer = promReg
	_, stop := f.start(cfg)
	defer stop()
	time.Sleep(time.Second) // the fold's commit waits for the row meanwhile
	require.Equal(t, start, f.stored(p)[0], "nothing committed while the row is held")
	releaseHeld(t, f, p, tx, stop, 101, 101)
	folds, reads, failed := foldFigures(t, promReg)
	require.Zero(t, failed, "the fold waited at its commit instead of failing")
	require.Equal(t, [2]int{1, 2}, [2]int{folds, reads}, "one fold of both reads")
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

// TestAFoldWritesItsNewMarksByCopy: the sequence marks a fold finds absent from
// their table go in by COPY, the others by the upsert, and the marks are a
// batch-by-batch replay's, window and all. A mark another transaction inserted
// since the fold read it as absent fails the COPY on its key: the fold is applied
// again batch by batch, and nothing is lost or parked.
func TestAFoldWritesItsNewMarksByCopy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	reg := events.NewRegistry()
	events.Register[orderPlaced](reg, "OrderPlaced")
	want := map[string][2]int{}
	var evs []events.Event
	// 4,000 orders at sequence 1, then every fourth again at sequence 2: its mark is
	// stored by then, in an earlier fold.
	for seq, every := range []int{1, 4} {
		for i := 0; i < 4000; i += every {
			o := orderPlaced{OrderID: fmt.Sprintf("o%05d", i), Customer: fmt.Sprintf("c%02d", i%20), Amount: 1 + i%100}
			e, err := reg.New("shop", o.OrderID, o, events.WithSequence(uint64(seq+1)))
			require.NoError(t, err)
			evs = append(evs, e)
			c := want[o.Customer]
			want[o.Customer] = [2]int{c[0] + o.Amount, c[1] + 1}
		}
	}
	for i := 0; i < len(evs); i += 5000 {
		f.publish(evs[i:min(i+5000, len(evs))]...)
	}
	ctx := context.Background()
	marks := func(p *readmodel.Projection) []string {
		rows, err := f.pool.Query(ctx, `SELECT subject || ' ' || last_sequence || ' ' || last_event_id || ' ' || coalesce(encode(recent, 'hex'), 'none')
			FROM `+pgx.Identifier{f.schema, "aggregates"}.Sanitize()+` WHERE projection = $1 ORDER BY subject`, p.Name())
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	run := func(foldRows int, before ...func(p *readmodel.Projection)) ([]string, int, int) {
		p, reg := replayOrders(t, f, foldRows, before...)
		require.Equal(t, want, customerTotals(t, f, p))
		require.Zero(t, count(t, f, f.schema, "parked", "projection = '"+p.Name()+"'"))
		folds, _, failed := foldFigures(t, reg)
		return marks(p), folds, failed
	}
	batches, folds, _ := run(-1)
	require.Zero(t, folds)
	require.Len(t, batches, 4000)

	folded, folds, failed := run(0)
	require.Positive(t, folds)
	require.Zero(t, failed)
	require.Equal(t, batches, folded, "the marks a replay by folds wrote")

	// The first write of o02000's mark is refused as a duplicate key, once: the mark
	// inserted by another transaction meanwhile, as PostgreSQL would refuse the COPY.
	raced, folds, failed := run(0, func(p *readmodel.Projection) {
		fw := pgx.Identifier{f.schema}.Sanitize()
		_, err := f.pool.Exec(ctx, `CREATE SEQUENCE `+fw+`.refused_once;
			CREATE FUNCTION `+fw+`.refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF nextval('`+f.schema+`.refused_once') = 1 THEN
					RAISE EXCEPTION 'duplicate key value violates unique constraint "aggregates_pkey" (the test''s)' USING ERRCODE = 'unique_violation';
				END IF;
				RETURN NEW;
			END $$;
			CREATE TRIGGER refuse_once BEFORE INSERT ON `+fw+`.aggregates FOR EACH ROW
				WHEN (NEW.projection = '`+p.Name()+`' AND NEW.subject = 'o02000') EXECUTE FUNCTION `+fw+`.refuse_once()`)
		require.NoError(t, err)
	})
	require.Positive(t, folds)
	require.Positive(t, failed, "the fold whose COPY was refused was rolled back")
	require.Equal(t, batches, raced, "the marks after a refused COPY")
}
