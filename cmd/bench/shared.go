package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/orders"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// Shared is scenario 6: partitions that write the same rows. Orders keyed by order id
// across the partitions fold into orders and customers (totals per customer); each
// partition's transaction updates customers that other partitions' transactions
// update too. The whole log (a million events by default) is replayed with the row
// API (orders.NewRowProjection: rows loaded per batch, locked and written in key
// order), set against the example domain's replay of the same run. The
// statement-by-statement Writer.Exec handlers (orders.NewProjection), which
// deadlock, replay only a small prefix of the same log, as a labelled baseline: at
// the 50–100 events/s they make, the whole log would take hours. Each replay goes
// into a fresh database and is checked against orders.Fold.
type Shared struct {
	Events     int64     `json:"events"`
	Customers  int       `json:"customers"`
	Partitions int       `json:"partitions"`
	BatchSize  int       `json:"batch_size"`
	SharedRun            // the row API, over the whole log
	Exec       SharedRun `json:"exec"` // the Exec baseline, over the first ExecEvents
	// Runs are the row API's runs' seconds; SharedRun is the median run's, with the
	// deadlocks and retries of all of them.
	Runs []float64 `json:"runs_seconds"`
	// ExecEvents is the Exec baseline's sample: a prefix of each partition, in
	// proportion (0: the baseline did not run).
	ExecEvents int64 `json:"exec_events"`
	// RowsOverExec is the row API's events/s (whole log) over Exec's (its sample),
	// in the same run.
	RowsOverExec float64 `json:"rows_over_exec"`
	// RatioToReplay is the row API's events/s over ReplayEventsPerSec, the example
	// domain's replay in the same run (0 when the run did not replay it).
	RatioToReplay      float64 `json:"ratio_to_replay"`
	ReplayEventsPerSec float64 `json:"replay_events_per_sec"`
}

// SharedRun is one replay of the shared-rows log.
type SharedRun struct {
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// Deadlocks is what PostgreSQL counted in the run's database
	// (pg_stat_database.deadlocks): each one failed a batch's transaction, which
	// the runner split and retried; Retries is the runner's count of transient errors
	// retried (projector_transient_errors_total), deadlocks and any other.
	Deadlocks int64 `json:"deadlocks"`
	Retries   int64 `json:"retries"`
	Verified  bool  `json:"verified_against_fold"`
}

// ordersTopic is the shared-rows log's topic: its name says what fills it.
func (e *env) ordersTopic() string {
	return fmt.Sprintf("bench.orders.%d.c%d.s%d.p%d", e.c.sharedEvents, e.c.sharedCustomers, e.c.seed, e.c.partitions)
}

// ensureOrdersLog generates the shared-rows log once; a full topic is reused.
func (e *env) ensureOrdersLog(ctx context.Context) error {
	g, err := orders.NewGenerator(e.c.seed, e.c.sharedCustomers)
	if err != nil {
		return err
	}
	e.ordersEnds, err = e.ensureTopic(ctx, e.ordersTopic(), e.c.sharedEvents, g.Next)
	return err
}

// shared replays the orders log with the row API and a prefix of it with Exec, each
// into a fresh database, and checks each result against an independent fold.
func (e *env) shared(ctx context.Context, replayPerSec float64) (Shared, error) {
	s := Shared{Customers: e.c.sharedCustomers, Partitions: e.c.partitions, BatchSize: projector.BatchSizeDefault,
		ReplayEventsPerSec: replayPerSec}
	topic, ends := e.ordersTopic(), e.ordersEnds
	s.Events = sum(ends)
	prefix := map[int]int64{}
	for part, end := range ends {
		prefix[part] = end * int64(min(e.c.sharedExecEvents, int(s.Events))) / max(s.Events, 1)
	}
	s.ExecEvents = sum(prefix)
	want, err := e.sharedExecBeside(ctx, &s, topic, prefix)
	if err != nil {
		return s, err
	}
	// The row API's replay runs --runs times, each checked: the median run's time,
	// every run's deadlocks and retries.
	var deadlocks, retries int64
	run, runs, err := medianRun(e.c.runs, func(int) (SharedRun, error) {
		var r SharedRun
		db, err := e.sharedReplay(ctx, &r, "rows", topic, ends, nil, orders.NewRowProjection)
		if err != nil {
			return r, err
		}
		defer e.drop(ctx, db.pool)
		err = e.checkShared(ctx, &r, db, "rows", want)
		deadlocks, retries = deadlocks+r.Deadlocks, retries+r.Retries
		return r, err
	}, func(r SharedRun) float64 { return r.Seconds })
	if err != nil {
		return s, err
	}
	s.SharedRun, s.Runs = run, runs
	s.Deadlocks, s.Retries = deadlocks, retries
	s.EventsPerSec = float64(s.Events) / s.Seconds
	if replayPerSec > 0 {
		s.RatioToReplay = s.EventsPerSec / replayPerSec
	}
	if s.ExecEvents > 0 {
		s.RowsOverExec = s.EventsPerSec / s.Exec.EventsPerSec
	}
	logf("shared rows: row API %d events, %.0f events/s, %d deadlocks, %d retries, %.2f × replay; Exec (first %d events) %.0f events/s, %d deadlocks",
		s.Events, s.EventsPerSec, s.Deadlocks, s.Retries, s.RatioToReplay, s.ExecEvents, s.Exec.EventsPerSec, s.Exec.Deadlocks)
	return s, nil
}

// sharedExecBeside reads and folds the orders log while the Exec baseline replays
// its prefix, then checks the baseline against the prefix's fold, and returns the
// whole log's fold. The baseline's time goes to its deadlocks (deadlock_timeout and
// the backoffs), not to the CPU the fold takes; the run saves the fold's time.
func (e *env) sharedExecBeside(ctx context.Context, s *Shared, topic string, prefix map[int]int64) (orders.State, error) {
	var want, wantPrefix orders.State
	folded := make(chan error, 1)
	go func() {
		start := time.Now()
		var err error
		want, wantPrefix, err = e.foldOrders(ctx, topic, prefix)
		if err == nil {
			e.mark("shared: read the log and fold it, whole and the Exec sample (beside the Exec baseline)", start)
		}
		folded <- err
	}()
	if s.ExecEvents == 0 {
		return want, <-folded
	}
	db, err := e.sharedReplay(ctx, &s.Exec, "exec", topic, prefix, prefix, orders.NewProjection)
	if ferr := <-folded; ferr != nil {
		return want, errors.Join(ferr, err)
	}
	if err != nil {
		return want, err
	}
	defer e.drop(ctx, db.pool)
	s.Exec.EventsPerSec = float64(s.ExecEvents) / s.Exec.Seconds
	return want, e.checkShared(ctx, &s.Exec, db, "exec", wantPrefix)
}

// foldOrders reads the orders log once, every partition at once, and folds it as it
// goes (orders.Folder: linear, the events not kept): the whole log, and the prefix
// up to prefix on the side.
func (e *env) foldOrders(ctx context.Context, topic string, prefix map[int]int64) (whole, part orders.State, err error) {
	all, pre := orders.NewFolder(), orders.NewFolder()
	var mu sync.Mutex
	var ferr error
	err = e.eachPartition(ctx, topic, nil, func(p int, m kafka.Message) {
		ev, err := eventlog.FromMessage(m)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			err = all.Add(ev)
		}
		if err == nil && m.Offset < prefix[p] {
			err = pre.Add(ev)
		}
		if err != nil && ferr == nil {
			ferr = fmt.Errorf("%s partition %d offset %d: %w", topic, p, m.Offset, err)
		}
	})
	if err == nil {
		err = ferr
	}
	return all.State(), pre.State(), err
}

// sharedDB is the database a shared-rows replay went into, and PostgreSQL's count
// of deadlocks in it before the replay.
type sharedDB struct {
	pool   *pgxpool.Pool
	name   string
	before int64
}

// sharedReplay replays the orders log into a fresh database with the projection
// newProjection makes, up to ends (stopping there when stopAt is set), and records
// its time and retries in r. The caller checks the database and closes it.
func (e *env) sharedReplay(ctx context.Context, r *SharedRun, label, topic string, ends, stopAt map[int]int64,
	newProjection func(string, int) (*readmodel.Projection, error)) (sharedDB, error) {
	pool, err := e.database(ctx, "shared_"+label)
	if err != nil {
		return sharedDB{}, err
	}
	db := sharedDB{pool: pool, name: pool.Config().ConnConfig.Database}
	p, err := newProjection("orders", 1)
	if err == nil {
		db.before, err = e.deadlocks(ctx, db.name)
	}
	if err != nil {
		pool.Close()
		return sharedDB{}, err
	}
	metrics := prometheus.NewRegistry()
	cfg := e.runnerConfig(pool, p)
	cfg.Topic, cfg.StopAt, cfg.Registerer = topic, stopAt, metrics
	start := time.Now()
	took, err := runUntil(ctx, cfg, ends, nil)
	if err == nil {
		e.mark(fmt.Sprintf("shared: replay, %s, %d events", label, sum(ends)), start)
		r.Seconds = took.took.Seconds()
		r.Retries, err = counter(metrics, "projector_transient_errors_total")
	}
	if err != nil {
		pool.Close()
		return sharedDB{}, err
	}
	return db, nil
}

// checkShared compares the read model in db with want, and then reads PostgreSQL's
// count of the deadlocks the replay met.
func (e *env) checkShared(ctx context.Context, r *SharedRun, db sharedDB, label string, want orders.State) error {
	start := time.Now()
	got, err := orders.Load(ctx, db.pool, "orders_v1")
	if err != nil {
		return err
	}
	if d := orders.Diff(want, got, 3); d != "" {
		return fmt.Errorf("the shared-rows read model (%s) differs from the fold: %s", label, d)
	}
	r.Verified = true
	e.mark("shared: compare with the fold, "+label, start)
	// The server's count, read after the check: a backend reports its statistics
	// within a second of its transaction's end.
	after, err := e.deadlocks(ctx, db.name)
	if err != nil {
		return err
	}
	r.Deadlocks = after - db.before
	return nil
}

// deadlocks is PostgreSQL's count of deadlocks detected in database db.
func (e *env) deadlocks(ctx context.Context, db string) (int64, error) {
	var n int64
	if _, err := e.admin.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
		return 0, err
	}
	err := e.admin.QueryRow(ctx, `SELECT coalesce(sum(deadlocks), 0) FROM pg_stat_database WHERE datname = $1`, db).Scan(&n)
	return n, err
}

// counter sums the counter called name in reg.
func counter(reg *prometheus.Registry, name string) (int64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int64(n), nil
}
