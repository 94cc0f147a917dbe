package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/snapshot"
)

const listenDefault = "127.0.0.1:18080"

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var listen, group, gaps, unknown string
	var batchSize int
	var readyLag int
	var batchTimeout, drain, session, heartbeat time.Duration
	var progress, activate bool
	var fx effectFlags
	var snaps snapshotFlags
	f := cli.NewFlags("run", `projector run: build the example read model (users with article counts, articles)
from the log — from offset zero for a new projection version, from its stored offsets
otherwise — then keep it current. Several instances with the same --group share the
partitions. Stops on SIGINT or SIGTERM, finishing the batch in flight within
--drain-timeout.

HTTP (--listen):
  GET /                       the status page: partitions, lag, rates, ETA, parked events, effects
  GET /healthz                the process answers
  GET /readyz                 200 once every partition this instance owns is live: the rule is
                              per partition, each one's lag (log end minus position) <= --ready-lag
  GET /status                 this instance's partitions: state, lag, events/s, ETA
  GET /metrics                Prometheus metrics
  GET /v1/users/{id}          one user, with their articles
  GET /v1/users?limit=N       users, by id
  GET /v1/stats               row counts

Effects (--effects): welcome_email sends a welcome mail over SMTP on UserRegistered,
once per user however often the log is replayed, through the Redis ledger
(--redis-url), the effect's watermark in PostgreSQL, and the horizon: an effect
that starts with no watermark sends nothing for events older than --effect-horizon.

Forgotten subjects (GDPR): the SubjectForgotten handler purges a forgotten subject
from the read model, and run purges every forgotten subject at start too. run also
owns the snapshot folder (--snapshot-dir), whatever wrote the snapshots in it
('snapshot create', a nightly job, its own --snapshot-* policy, another service):
every snapshot there that may hold data of a forgotten subject — any not rewritten
since the subject was forgotten — is rewritten without it (restored into a scratch
schema, purged, taken again, the old one deleted). It looks at start, within a second
of applying a SubjectForgotten, and every --scrub-every; no snapshot policy is needed.
Instances sharing the folder take turns (a PostgreSQL advisory lock and a lock file in
the folder). 'snapshot list' and 'status' show the snapshots still waiting.`)
	c.register(f)
	f.String(&listen, "listen", "PROJECTOR_LISTEN", listenDefault, "HTTP listen address")
	f.String(&group, "group", "PROJECTOR_GROUP", "", "Kafka consumer group (default projector.NAME.vVERSION)")
	f.Int(&batchSize, "batch-size", "PROJECTOR_BATCH_SIZE", projector.BatchSizeDefault, "most events in one transaction")
	f.Duration(&batchTimeout, "batch-timeout", "PROJECTOR_BATCH_TIMEOUT", projector.BatchTimeoutDefault, "how long a partial batch waits for more events")
	f.Int(&readyLag, "ready-lag", "PROJECTOR_READY_LAG", projector.ReadyLagDefault, readyLagUsage)
	f.Duration(&drain, "drain-timeout", "PROJECTOR_DRAIN_TIMEOUT", projector.DrainTimeoutDefault, "bound on finishing the in-flight batch at stop or rebalance")
	f.Duration(&session, "session-timeout", "PROJECTOR_SESSION_TIMEOUT", projector.SessionTimeoutDefault, "Kafka group session timeout")
	f.Duration(&heartbeat, "heartbeat", "PROJECTOR_HEARTBEAT", projector.HeartbeatIntervalDefault, "Kafka group heartbeat interval")
	f.String(&gaps, "gaps", "PROJECTOR_GAPS", "warn", "a gap in an aggregate's sequence: warn (apply, report) or halt (park the aggregate)")
	f.String(&unknown, "unknown-types", "PROJECTOR_UNKNOWN_TYPES", "skip", "an event type the registry lacks: skip or park")
	f.Bool(&progress, "progress", "PROJECTOR_PROGRESS", cli.IsTerminal(os.Stderr), "draw a progress bar on standard error while replaying")
	fx.register(f)
	snaps.register(f)
	f.Bool(&activate, "activate-when-live", "PROJECTOR_ACTIVATE_WHEN_LIVE", false, "point the stable views (schema NAME) at this version once it is live")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	gapPolicy, unknownPolicy, err := parsePolicies(gaps, unknown)
	if err != nil {
		return err
	}
	if batchSize < 1 {
		return fmt.Errorf("--batch-size (PROJECTOR_BATCH_SIZE) %d: must be at least 1", batchSize)
	}
	if err := checkReadyLag(readyLag); err != nil {
		return err
	}
	for name, d := range map[string]time.Duration{"--batch-timeout": batchTimeout, "--drain-timeout": drain, "--session-timeout": session, "--heartbeat": heartbeat} {
		if err := positive(name, d); err != nil {
			return err
		}
	}
	log, err := cli.NewLogger(c.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level (LOG_LEVEL): %w", err)
	}
	defer func() { _ = log.Sync() }()
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	keys, err := c.keys(ctx, pool, proj)
	if err != nil {
		return err
	}

	policy, err := snaps.open(ctx, &c, pool, proj, keys, log)
	if err != nil {
		return err
	}
	effects, ledger, closeFx, err := fx.open(proj)
	if err != nil {
		return err
	}
	defer closeFx()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	runner, err := projector.New(projector.Config{
		Brokers: cli.SplitList(c.brokers), Topic: c.topic, Projection: proj, Pool: pool, GroupID: group,
		Schema: c.schema, Logger: log, Registerer: reg,
		BatchSize: batchSize, BatchTimeout: batchTimeout, ReadyLag: readyLagSetting(readyLag), DrainTimeout: drain,
		SessionTimeout: session, HeartbeatInterval: heartbeat, Gaps: gapPolicy, Unknown: unknownPolicy,
		Effects: effects, Ledger: ledger, EffectHorizon: fx.horizon, EffectConcurrency: fx.concurrency, EffectMaxAttempts: fx.attempts, EffectBatchSize: fx.batch,
		Snapshots: policy, ScrubStore: snapshot.FolderStore{Dir: snaps.dir}, ScrubEvery: snaps.scrubEvery,
		ActivateWhenLive: activate, Keys: keys,
	})
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen (PROJECTOR_LISTEN) %s: %w", listen, err)
	}
	srv := &http.Server{Handler: newAPI(runner, pool, proj, reg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", zap.Error(err))
		}
	}()
	log.Info("serving HTTP", zap.String("addr", ln.Addr().String()))
	stopBar := func() {}
	if progress {
		stopBar = progressBar(ctx, runner, stderr)
	}
	runErr := runner.Run(ctx)
	stopBar()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return runErr
}

// progressBar draws the catch-up on a terminal until ctx ends.
func progressBar(ctx context.Context, r *projector.Runner, out io.Writer) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		drawn := false
		for {
			select {
			case <-ctx.Done():
				if drawn {
					_, _ = fmt.Fprintln(out)
				}
				return
			case <-t.C:
			}
			st := r.Status()
			var next, end int64
			var rate float64
			for _, p := range st.Partitions {
				next, end, rate = next+p.Next, end+p.HighWater, rate+p.EventsPerSec
			}
			if end == 0 || (st.Ready && !drawn) {
				continue
			}
			frac := float64(next) / float64(end)
			const width = 30
			bar := strings.Repeat("#", int(frac*width)) + strings.Repeat(".", width-int(frac*width))
			eta := "-"
			if rate > 0 {
				eta = (time.Duration(float64(st.Lag) / rate * float64(time.Second))).Round(time.Second).String()
			}
			_, _ = fmt.Fprintf(out, "\r[%s] %5.1f%%  %d/%d  lag %d  %.0f events/s  ETA %s   ", bar, 100*frac, next, end, st.Lag, rate, eta)
			drawn = true
		}
	}()
	return func() { <-done }
}

type api struct {
	runner *projector.Runner
	pool   *pgxpool.Pool
	schema string
	mux    *http.ServeMux
}

func newAPI(r *projector.Runner, pool *pgxpool.Pool, p *readmodel.Projection, reg *prometheus.Registry) http.Handler {
	a := &api{runner: r, pool: pool, schema: pgx.Identifier{p.Schema()}.Sanitize(), mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /{$}", a.page)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, r.Status()) })
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /v1/users/{id}", a.user)
	a.mux.HandleFunc("GET /v1/users", a.users)
	a.mux.HandleFunc("GET /v1/stats", a.stats)
	return a.mux
}

func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	st := a.runner.Status()
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ready": st.Ready, "joined": st.Joined, "lag": st.Lag, "partitions": len(st.Partitions),
		"ready_lag": st.ReadyLag, "ready_rule": st.ReadyRule})
}

//go:embed web/status.html
var statusPage string

var statusTemplate = template.Must(template.New("status").Parse(statusPage))

// page renders the status page with the current status; its script refreshes it
// from /status every second.
func (a *api) page(w http.ResponseWriter, _ *http.Request) {
	st := a.runner.Status()
	js, err := json.Marshal(st)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusTemplate.Execute(w, struct {
		projector.Status
		JSON template.JS
	}{st, template.JS(js)}) //nolint:gosec // JSON from our own status, not user input
}
