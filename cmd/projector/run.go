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
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
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
	var batchTimeout, drain, session, heartbeat, startupTimeout time.Duration
	var progress, activate bool
	var fx effectFlags
	var snaps snapshotFlags
	f := cli.NewFlags("run", `projector run: build the example read model (users with article counts, articles)
from the log — from offset zero for a new projection version, from its stored offsets
otherwise — then keep it current. Several instances with the same --group share the
partitions. Stops on SIGINT or SIGTERM, finishing the batch in flight within
--drain-timeout.

Start: run waits for the read model's database (and the key store's), then for the
topic on Kafka, warning every few seconds with the address and the error while one
does not answer; /healthz answers 503 with the reason meanwhile. It waits for ever
unless --startup-timeout is set: past it, run exits 1 naming what it waited for.

HTTP (--listen, served from the start):
  GET /                       the status page: partitions, lag, rates, ETA, parked events, effects
  GET /healthz                200 once PostgreSQL and Kafka answered at start; 503 with
                              what run waits for until then
  GET /readyz                 200 once every partition this instance owns is live: the rule is
                              per partition, each one's lag (log end minus position) <= --ready-lag
  GET /status                 this instance's partitions: state, lag, events/s, ETA, and its
                              counts since it started (applied, duplicates, effect runs)
  GET /status/stored          as stored, for every instance ('projector status --json'):
                              positions, consumed totals, each effect's watermark, lag and
                              parked runs
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
	f.Duration(&startupTimeout, "startup-timeout", "PROJECTOR_STARTUP_TIMEOUT", 0,
		"give up (exit 1) when PostgreSQL or the topic on Kafka still does not answer this long after start (0: wait for ever, warning every few seconds)")
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
	if startupTimeout < 0 {
		return fmt.Errorf("--startup-timeout (PROJECTOR_STARTUP_TIMEOUT) %v: must not be negative", startupTimeout)
	}
	log, err := cli.NewLogger(c.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level (LOG_LEVEL): %w", err)
	}
	defer func() { _ = log.Sync() }()
	pool, proj, err := c.openPool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := c.master(proj); err != nil { // refused before serving anything
		return err
	}

	// One Kafka client for the stored status the page asks every 2 s, closed after
	// the HTTP server.
	kc := eventlog.NewClient(cli.SplitList(c.brokers))
	defer kc.Close()

	// HTTP first, so that /healthz says what start waits for.
	start := newStartup(log, startupTimeout)
	c.reach = start.reach
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen (PROJECTOR_LISTEN) %s: %w", listen, err)
	}
	srv := &http.Server{Handler: start, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", zap.Error(err))
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()
	log.Info("serving HTTP", zap.String("addr", ln.Addr().String()))
	err = func() error {
		if err := c.reachDB(ctx, c.databaseName(), pool.Ping); err != nil {
			return err
		}
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
		start.serve(newAPI(runner, pool, proj, reg, admin.Inspection{
			Pool: pool, Schema: c.schema, Brokers: cli.SplitList(c.brokers), Client: kc, Topic: c.topic,
			Projection: proj.Name(), Version: proj.Version(), ReadyLag: readyLagSetting(readyLag), Effects: effectNames(fx.names),
		}))
		runCtx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		watched := make(chan struct{})
		go func() { defer close(watched); start.watch(runCtx, runner, cancel) }()
		stopBar := func() {}
		if progress {
			stopBar = progressBar(runCtx, runner, stderr)
		}
		err = runner.Run(runCtx)
		cancel(nil)
		<-watched
		stopBar()
		if cause := gaveUp(runCtx); cause != nil {
			return cause
		}
		return err
	}()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped (SIGINT, SIGTERM), even while start still waited
	}
	return err
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
	stored storedStatus
}

// newAPI serves the runner's status, its metrics and the read model. stored asks
// where the projection stands in PostgreSQL and Kafka, for every instance.
func newAPI(r *projector.Runner, pool *pgxpool.Pool, p *readmodel.Projection, reg *prometheus.Registry, stored admin.Inspection) http.Handler {
	a := &api{runner: r, pool: pool, schema: pgx.Identifier{p.Schema()}.Sanitize(), mux: http.NewServeMux(), stored: storedStatus{in: stored}}
	a.mux.HandleFunc("GET /{$}", a.page)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, r.Status()) })
	a.mux.HandleFunc("GET /status/stored", a.storedStatus)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /v1/users/{id}", a.user)
	a.mux.HandleFunc("GET /v1/users", a.users)
	a.mux.HandleFunc("GET /v1/stats", a.stats)
	return a.mux
}

// healthz answers 200 once the runner reached Kafka at start, and 503 with what it
// waits for until then (PostgreSQL is reached before the API serves).
func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	if why := a.runner.Status().Waiting; why != "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "waiting", "waiting": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// storedStatus is where the projection stands as stored — every instance's
// positions, consumed totals, the effects' watermarks and parked runs — asked of
// PostgreSQL and Kafka at most every storedMaxAge, whatever the page's refresh rate.
type storedStatus struct {
	in admin.Inspection

	mu  sync.Mutex
	at  time.Time
	st  projector.Status
	err error
}

const storedMaxAge = 2 * time.Second

func (s *storedStatus) get(ctx context.Context) (projector.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) >= storedMaxAge {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.st, s.err = admin.Inspect(ictx, s.in)
		cancel()
		s.at = time.Now()
	}
	return s.st, s.err
}

func (a *api) storedStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.stored.get(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	st := a.runner.Status()
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": st.Ready, "joined": st.Joined, "lag": st.Lag, "partitions": len(st.Partitions),
		"ready_lag": st.ReadyLag, "ready_rule": st.ReadyRule}
	if st.Waiting != "" {
		body["waiting"] = st.Waiting
	}
	writeJSON(w, code, body)
}

//go:embed web/status.html
var statusPage string

var statusTemplate = template.Must(template.New("status").Parse(statusPage))

// page renders the status page: this instance's status, and the stored one (every
// instance's positions and consumed totals, the effects); its script refreshes both
// from /status and /status/stored every second.
func (a *api) page(w http.ResponseWriter, r *http.Request) {
	st := a.runner.Status()
	js, err := json.Marshal(st)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var stored any
	if s, err := a.stored.get(r.Context()); err != nil {
		stored = map[string]string{"error": err.Error()}
	} else {
		stored = s
	}
	sjs, err := json.Marshal(stored)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusTemplate.Execute(w, struct {
		projector.Status
		JSON, StoredJSON template.JS
	}{st, template.JS(js), template.JS(sjs)}) //nolint:gosec // JSON from our own status, not user input
}
