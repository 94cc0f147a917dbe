package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/internal/orders"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// Shared is scenario 6: partitions that write the same rows. Orders keyed by order id
// across the partitions fold into orders and customers (totals per customer); each
// partition's transaction updates customers that other partitions' transactions
// update too. The same log is replayed twice, into fresh databases: with the row API
// (orders.NewRowProjection: rows loaded per batch, folded in memory, written once in
// key order) and with statement-by-statement Writer.Exec handlers
// (orders.NewProjection), the baseline.
type Shared struct {
	Events     int64     `json:"events"`
	Customers  int       `json:"customers"`
	Partitions int       `json:"partitions"`
	BatchSize  int       `json:"batch_size"`
	SharedRun            // the row API
	Exec       SharedRun `json:"exec"` // the Exec baseline
	// RowsOverExec is the row API's events/s over Exec's, in the same run.
	RowsOverExec  float64 `json:"rows_over_exec"`
	RatioToReplay float64 `json:"ratio_to_replay"` // the row API's, against the example's replay
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

// shared replays the orders log with the row API and with Exec, each into a fresh
// database, and checks each result against orders.Fold.
func (e *env) shared(ctx context.Context, replayPerSec float64) (Shared, error) {
	s := Shared{Customers: e.c.sharedCustomers, Partitions: e.c.partitions, BatchSize: projector.BatchSizeDefault}
	topic := fmt.Sprintf("bench.orders.%d.c%d.s%d.p%d", e.c.sharedEvents, e.c.sharedCustomers, e.c.seed, e.c.partitions)
	g, err := orders.NewGenerator(e.c.seed, e.c.sharedCustomers)
	if err != nil {
		return s, err
	}
	start := time.Now()
	ends, err := e.ensureTopic(ctx, topic, e.c.sharedEvents, g.Next)
	if err != nil {
		return s, err
	}
	e.mark("shared: generate or reuse the orders log", start)
	s.Events = sum(ends)
	start = time.Now()
	evs, err := e.readLog(ctx, topic, nil)
	if err != nil {
		return s, err
	}
	want, err := orders.Fold(evs)
	if err != nil {
		return s, err
	}
	e.mark("shared: read the log and fold it", start)
	if s.SharedRun, err = e.sharedRun(ctx, "rows", topic, ends, want, orders.NewRowProjection); err != nil {
		return s, err
	}
	if s.Exec, err = e.sharedRun(ctx, "exec", topic, ends, want, orders.NewProjection); err != nil {
		return s, err
	}
	s.EventsPerSec = float64(s.Events) / s.Seconds
	s.Exec.EventsPerSec = float64(s.Events) / s.Exec.Seconds
	s.RowsOverExec = s.EventsPerSec / s.Exec.EventsPerSec
	if replayPerSec > 0 {
		s.RatioToReplay = s.EventsPerSec / replayPerSec
	}
	logf("shared rows: %d events; row API %.0f events/s, %d deadlocks; Exec %.0f events/s, %d deadlocks; %.2f × Exec",
		s.Events, s.EventsPerSec, s.Deadlocks, s.Exec.EventsPerSec, s.Exec.Deadlocks, s.RowsOverExec)
	return s, nil
}

// sharedRun replays the orders log into a fresh database with the projection
// newProjection makes, and checks the result against want.
func (e *env) sharedRun(ctx context.Context, label, topic string, ends map[int]int64, want orders.State,
	newProjection func(string, int) (*readmodel.Projection, error)) (SharedRun, error) {
	var r SharedRun
	pool, err := e.database(ctx, "shared_"+label)
	if err != nil {
		return r, err
	}
	defer pool.Close()
	db := pool.Config().ConnConfig.Database
	p, err := newProjection("orders", 1)
	if err != nil {
		return r, err
	}
	metrics := prometheus.NewRegistry()
	cfg := e.runnerConfig(pool, p)
	cfg.Topic = topic
	cfg.Registerer = metrics
	before, err := e.deadlocks(ctx, db)
	if err != nil {
		return r, err
	}
	start := time.Now()
	took, err := runUntil(ctx, cfg, ends, nil)
	if err != nil {
		return r, err
	}
	e.mark("shared: replay, "+label, start)
	r.Seconds = took.Seconds()
	if r.Retries, err = counter(metrics, "projector_transient_errors_total"); err != nil {
		return r, err
	}
	got, err := orders.Load(ctx, pool, "orders_v1")
	if err != nil {
		return r, err
	}
	if d := orders.Diff(want, got, 3); d != "" {
		return r, fmt.Errorf("the shared-rows read model (%s) differs from the fold: %s", label, d)
	}
	r.Verified = true
	// The server's count, read after the check: a backend reports its statistics
	// within a second of its transaction's end.
	after, err := e.deadlocks(ctx, db)
	if err != nil {
		return r, err
	}
	r.Deadlocks = after - before
	return r, nil
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
