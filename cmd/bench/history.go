package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/sideeffects"
)

// History is the replay of a new service with an effect: the whole log, into a
// fresh database, with a no-op effect on every event type at the ledger's default
// horizon (30 days), which the generated history predates. Nothing may fire, the
// read model must equal the replay's, and the time is until both the read model and
// the effect's watermarks reach the end.
type History struct {
	Events         int64     `json:"events"`
	Seconds        float64   `json:"seconds"` // the median run's
	EventsPerSec   float64   `json:"events_per_sec"`
	ReplayPerSec   float64   `json:"replay_events_per_sec"` // the replay's figure in the same run
	RatioToReplay  float64   `json:"ratio_to_replay"`
	EffectLogReads int64     `json:"effect_log_reads"` // events the effect read from the log itself, the median run's
	Fired          int64     `json:"fired"`            // every run's: must be 0
	Verified       bool      `json:"verified_against_replay"`
	BusyCores      float64   `json:"machine_busy_cores"`
	Runs           []float64 `json:"runs_seconds"`
}

// history is one run of the History scenario; replayPerSec is the replay's figure.
func (e *env) history(ctx context.Context, replayPerSec float64) (History, error) {
	h := History{Events: sum(e.ends)}
	if e.foldSum == "" {
		return h, errors.New("the replay's checksum is missing: run it with the replay")
	}
	opts, err := redis.ParseURL(e.c.redisURL)
	if err != nil {
		return h, err
	}
	rc := redis.NewClient(opts)
	defer func() { _ = rc.Close() }()
	var fired atomic.Int64
	eff, err := noopEffect(&fired)
	if err != nil {
		return h, err
	}
	ledger, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: rc, Namespace: fmt.Sprintf("bench-history-%d", time.Now().UnixNano())})
	if err != nil {
		return h, err
	}
	pool, err := e.database(ctx, "history")
	if err != nil {
		return h, err
	}
	defer e.drop(ctx, pool)
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return h, err
	}
	cfg := e.runnerConfig(pool, p)
	reg := prometheus.NewRegistry()
	cfg.Registerer, cfg.Effects, cfg.Ledger = reg, []*sideeffects.Effect{eff}, ledger
	// Under the service's memory limit, as the replay runs are.
	if _, err := cli.ApplyMemoryLimit(e.c.memoryLimit, "", "--memory-limit", ""); err != nil {
		return h, err
	}
	defer debug.SetMemoryLimit(math.MaxInt64)
	runtime.GC()
	took, err := runUntil(ctx, cfg, e.ends, nil)
	if err != nil {
		return h, err
	}
	h.Seconds, h.BusyCores = took.took.Seconds(), took.busy
	h.EventsPerSec = float64(h.Events) / h.Seconds
	h.ReplayPerSec, h.RatioToReplay = replayPerSec, h.EventsPerSec/replayPerSec
	h.Fired = fired.Load()
	if h.EffectLogReads, err = counter(reg, "projector_effect_log_reads_total"); err != nil {
		return h, err
	}
	if h.Fired != 0 {
		return h, fmt.Errorf("the effect ran %d times for a history older than its horizon", h.Fired)
	}
	got, err := readModelSum(ctx, pool)
	if err != nil {
		return h, err
	}
	if got != e.foldSum {
		return h, fmt.Errorf("the read model replayed with an effect (checksum %s) differs from the replay's, which equals the fold (%s)", got, e.foldSum)
	}
	h.Verified = true
	logf("history: %.1f s (%.0f events/s, %.2f × the replay), the effect read %d events from the log, %s",
		h.Seconds, h.EventsPerSec, h.RatioToReplay, h.EffectLogReads, fmtBusy(h.BusyCores, runtime.NumCPU()))
	return h, nil
}
