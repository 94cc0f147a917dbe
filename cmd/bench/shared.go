package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/internal/orders"
	"github.com/projector/projector/pkg/projector"
)

// Shared is scenario 6: partitions that write the same rows. Orders keyed by order id
// across the partitions fold into orders and customers (totals per customer); each
// partition's transaction updates customers that other partitions' transactions
// update too.
type Shared struct {
	Events       int64   `json:"events"`
	Customers    int     `json:"customers"`
	Partitions   int     `json:"partitions"`
	BatchSize    int     `json:"batch_size"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// Deadlocks is what PostgreSQL counted in the run's database
	// (pg_stat_database.deadlocks): each one failed a batch's transaction, which
	// the runner retried; Retries is the runner's count of transient errors
	// retried (projector_transient_errors_total), deadlocks and any other.
	Deadlocks     int64   `json:"deadlocks"`
	Retries       int64   `json:"retries"`
	RatioToReplay float64 `json:"ratio_to_replay"`
	Verified      bool    `json:"verified_against_fold"`
}

// shared replays the orders log once into a fresh database and checks the result
// against orders.Fold.
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
	pool, err := e.database(ctx, "shared")
	if err != nil {
		return s, err
	}
	defer pool.Close()
	db := pool.Config().ConnConfig.Database
	p, err := orders.NewProjection("orders", 1)
	if err != nil {
		return s, err
	}
	metrics := prometheus.NewRegistry()
	cfg := e.runnerConfig(pool, p)
	cfg.Topic = topic
	cfg.Registerer = metrics
	before, err := e.deadlocks(ctx, db)
	if err != nil {
		return s, err
	}
	start = time.Now()
	took, err := runUntil(ctx, cfg, ends, nil)
	if err != nil {
		return s, err
	}
	e.mark("shared: replay", start)
	s.Seconds = took.Seconds()
	s.EventsPerSec = float64(s.Events) / s.Seconds
	if replayPerSec > 0 {
		s.RatioToReplay = s.EventsPerSec / replayPerSec
	}
	if s.Retries, err = counter(metrics, "projector_transient_errors_total"); err != nil {
		return s, err
	}
	start = time.Now()
	evs, err := e.readLog(ctx, topic, nil)
	if err != nil {
		return s, err
	}
	want, err := orders.Fold(evs)
	if err != nil {
		return s, err
	}
	got, err := orders.Load(ctx, pool, "orders_v1")
	if err != nil {
		return s, err
	}
	if d := orders.Diff(want, got, 3); d != "" {
		return s, fmt.Errorf("the shared-rows read model differs from the fold: %s", d)
	}
	s.Verified = true
	e.mark("shared: fold check", start)
	// The server's count, read after the check: a backend reports its statistics
	// within a second of its transaction's end.
	after, err := e.deadlocks(ctx, db)
	if err != nil {
		return s, err
	}
	s.Deadlocks = after - before
	logf("shared rows: %d events in %.1f s (%.0f events/s), %d deadlocks, %d retries",
		s.Events, s.Seconds, s.EventsPerSec, s.Deadlocks, s.Retries)
	return s, nil
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
