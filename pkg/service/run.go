package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/statusview"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/snapshot"
)

// ListenDefault is the default of --listen.
const ListenDefault = "127.0.0.1:18080"

// MemoryLimitDefault is the default of --memory-limit: the Go runtime's soft memory
// limit for run. It leaves the garbage collector room at the default batch size (1000
// events) on up to about 16 partitions per instance, for events of about 0.5 KB; what
// the memory depends on, and when to raise the limit: docs/operations.md, Memory.
const MemoryLimitDefault = "128MiB"

const runHelp = `{{.Name}} run: build the read model from the log — from offset zero for a new
projection version, from its stored offsets otherwise — then keep it current.
Several instances with the same --group share the partitions. Stops on SIGINT or
SIGTERM, finishing the batch and the effect runs in flight within --drain-timeout.{{.About}}

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
  GET /status/stored          as stored, for every instance ('{{.Name}} status --json'):
                              positions, consumed totals, each effect's watermark, lag and
                              parked runs
  GET /metrics                Prometheus metrics
{{.Routes}}
Effects (--effects):
{{.Effects}}Each fires once per event however often the log is replayed, through the Redis
ledger (--redis-url), the effect's watermark in PostgreSQL, and the horizon: an
effect that starts with no watermark sends nothing for events older than
--effect-horizon. An effect reads the read model through its run's read-only
handle (sideeffects.Run.ReadModel), as of its event's commit or later.

Forgotten subjects (GDPR): the SubjectForgotten handler purges a forgotten subject
from the read model, and run purges every forgotten subject at start too. run also
owns the snapshot folder (--snapshot-dir), whatever wrote the snapshots in it
('snapshot create', a nightly job, its own --snapshot-* policy, another service):
every snapshot there that may hold data of a forgotten subject — any not rewritten
since the subject was forgotten — is rewritten without it (restored into a scratch
schema, purged, taken again, the old one deleted). It looks at start, within a second
of applying a SubjectForgotten, and every --scrub-every; no snapshot policy is needed.
Instances sharing the folder take turns (a PostgreSQL advisory lock and a lock file in
the folder). 'snapshot list' and 'status' show the snapshots still waiting.`

// runHelp is run's --help text for this service.
func (s *service) runHelp() string {
	about, routes, effects := "", "", "  none\n"
	if s.About != "" {
		about = "\nThe read model: " + s.About + "."
	}
	for _, r := range s.RoutesHelp {
		routes += "  " + r + "\n"
	}
	if len(s.Effects) > 0 {
		effects = ""
	}
	for _, e := range s.Effects {
		effects += fmt.Sprintf("  %-26s  %s\n", e.Name, e.Help)
	}
	return strings.NewReplacer("{{.Name}}", s.name, "{{.About}}", about, "{{.Routes}}", routes, "{{.Effects}}", effects).Replace(runHelp)
}

// runCmd is one 'run': its settings, then what it opened.
type runCmd struct {
	svc                                                     *service
	c                                                       *common
	listen, group, gaps, unknown, memoryLimit               string
	batchSize, foldRows, readyLag                           int
	batchTimeout, drain, session, heartbeat, startupTimeout time.Duration
	progress, activate, syncCommit                          bool
	fx                                                      effectFlags
	snaps                                                   snapshotFlags

	gapPolicy     projector.GapPolicy
	unknownPolicy projector.UnknownPolicy
	log           *zap.Logger
	pool          *pgxpool.Pool
	proj          *readmodel.Projection
	kc            *eventlog.Client
	start         *startup
}

func (r *runCmd) register(f *cli.Flags) {
	r.c.register(f)
	f.String(&r.listen, "listen", "PROJECTOR_LISTEN", ListenDefault, "HTTP listen address")
	f.String(&r.group, "group", "PROJECTOR_GROUP", "", "Kafka consumer group (default projector.NAME.vVERSION)")
	f.Int(&r.batchSize, "batch-size", "PROJECTOR_BATCH_SIZE", projector.BatchSizeDefault, "most events in one read of a partition, and in one transaction once it is live")
	f.Int(&r.foldRows, "fold-rows", "PROJECTOR_FOLD_ROWS", projector.FoldRowsDefault,
		"while a partition replays, its reads fold into one transaction until it holds this many rows and sequence marks in memory (or for 2 s), so that rows touched again are written once (0: one read per transaction; docs/operations.md, Memory)")
	f.String(&r.memoryLimit, "memory-limit", "PROJECTOR_MEMORY_LIMIT", MemoryLimitDefault,
		"the Go runtime's soft memory limit (150MiB, 1GiB; off: none): the garbage collector works harder near it rather than let the heap double; GOMEMLIMIT, when set, wins over the default")
	f.Bool(&r.syncCommit, "sync-commit", "PROJECTOR_SYNC_COMMIT", false,
		"each batch's commit waits for PostgreSQL to flush it to disk; without, a database crash may lose the last batches committed (whole, with their positions), which are applied again from the log (docs/operations.md)")
	f.Duration(&r.batchTimeout, "batch-timeout", "PROJECTOR_BATCH_TIMEOUT", projector.BatchTimeoutDefault, "how long a partial batch waits for more events")
	f.Int(&r.readyLag, "ready-lag", "PROJECTOR_READY_LAG", projector.ReadyLagDefault, readyLagUsage)
	f.Duration(&r.drain, "drain-timeout", "PROJECTOR_DRAIN_TIMEOUT", projector.DrainTimeoutDefault, "bound on finishing, at stop or rebalance, the read model's batch in flight and the effect runs in flight (no new run starts)")
	f.Duration(&r.session, "session-timeout", "PROJECTOR_SESSION_TIMEOUT", projector.SessionTimeoutDefault, "Kafka group session timeout")
	f.Duration(&r.heartbeat, "heartbeat", "PROJECTOR_HEARTBEAT", projector.HeartbeatIntervalDefault, "Kafka group heartbeat interval")
	f.String(&r.gaps, "gaps", "PROJECTOR_GAPS", "warn", "a gap in an aggregate's sequence: warn (apply, report) or halt (park the aggregate)")
	f.String(&r.unknown, "unknown-types", "PROJECTOR_UNKNOWN_TYPES", "skip", "an event type the registry lacks: skip or park")
	f.Bool(&r.progress, "progress", "PROJECTOR_PROGRESS", cli.IsTerminal(os.Stderr), "draw a progress bar on standard error while replaying")
	r.fx.register(f, r.svc)
	r.snaps.register(f)
	f.Bool(&r.activate, "activate-when-live", "PROJECTOR_ACTIVATE_WHEN_LIVE", false, "point the stable views (schema NAME) at this version once it is live")
	f.Duration(&r.startupTimeout, "startup-timeout", "PROJECTOR_STARTUP_TIMEOUT", 0,
		"give up (exit 1) when PostgreSQL or the topic on Kafka still does not answer this long after start (0: wait for ever, warning every few seconds)")
}

// check refuses bad settings, naming them.
func (r *runCmd) check() error {
	var err error
	if r.gapPolicy, r.unknownPolicy, err = parsePolicies(r.gaps, r.unknown); err != nil {
		return err
	}
	if r.batchSize < 1 {
		return fmt.Errorf("--batch-size (PROJECTOR_BATCH_SIZE) %d: must be at least 1", r.batchSize)
	}
	if r.foldRows < 0 {
		return fmt.Errorf("--fold-rows (PROJECTOR_FOLD_ROWS) %d: must be at least 0 (0: no folds)", r.foldRows)
	}
	if err := checkReadyLag(r.readyLag); err != nil {
		return err
	}
	if _, err := cli.ParseMemoryLimit(r.memoryLimit); err != nil {
		return fmt.Errorf("--memory-limit (PROJECTOR_MEMORY_LIMIT) %w", err)
	}
	for name, d := range map[string]time.Duration{"--batch-timeout": r.batchTimeout, "--drain-timeout": r.drain, "--session-timeout": r.session, "--heartbeat": r.heartbeat} {
		if err := cli.Positive(name, d); err != nil {
			return err
		}
	}
	if r.startupTimeout < 0 {
		return fmt.Errorf("--startup-timeout (PROJECTOR_STARTUP_TIMEOUT) %v: must not be negative", r.startupTimeout)
	}
	return nil
}

func (s *service) runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	r := &runCmd{svc: s, c: s.common()}
	f := cli.NewFlags("run", s.runHelp())
	r.register(f)
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	if err := r.check(); err != nil {
		return err
	}
	log, err := cli.NewLogger(r.c.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level (LOG_LEVEL): %w", err)
	}
	defer func() { _ = log.Sync() }()
	r.log = log
	limit, err := cli.ApplyMemoryLimit(r.memoryLimit, MemoryLimitDefault, "--memory-limit", "PROJECTOR_MEMORY_LIMIT")
	if err != nil {
		return err
	}
	log.Info("memory limit", zap.String("limit", limit.String()))
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); cli.WatchMemory(watchCtx, log, limit, 10*time.Second) }()
	defer func() { stopWatch(); <-watched }()
	if r.pool, r.proj, err = r.c.openPool(ctx); err != nil {
		return err
	}
	defer r.pool.Close()
	if _, err := r.c.master(r.proj); err != nil { // refused before serving anything
		return err
	}
	// One Kafka client for the stored status the page asks every 2 s, closed after
	// the HTTP server.
	r.kc = eventlog.NewClient(cli.SplitList(r.c.brokers))
	defer r.kc.Close()
	// HTTP first, so that /healthz says what start waits for.
	r.start = newStartup(log, r.startupTimeout)
	r.c.reach = r.start.reach
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", r.listen)
	if err != nil {
		return fmt.Errorf("--listen (PROJECTOR_LISTEN) %s: %w", r.listen, err)
	}
	stopHTTP := statusview.Serve(ctx, ln, r.start, log)
	defer stopHTTP()
	err = r.consume(ctx, stderr)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped (SIGINT, SIGTERM), even while start still waited
	}
	return err
}

// consume waits for the servers, builds the runner, hands HTTP to its API and runs it
// until ctx ends.
func (r *runCmd) consume(ctx context.Context, stderr io.Writer) error {
	if err := r.c.reachDB(ctx, r.c.databaseName(), r.pool.Ping); err != nil {
		return err
	}
	keys, err := r.c.keys(ctx, r.pool, r.proj)
	if err != nil {
		return err
	}
	policy, err := r.snaps.open(ctx, r.c, r.pool, r.proj, keys, r.log)
	if err != nil {
		return err
	}
	effects, ledger, closeFx, err := r.fx.open(r.svc, r.proj)
	if err != nil {
		return err
	}
	defer closeFx()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c := r.c
	runner, err := projector.New(projector.Config{
		Brokers: cli.SplitList(c.brokers), Topic: c.topic, Projection: r.proj, Pool: r.pool, GroupID: r.group,
		Schema: c.schema, Logger: r.log, Registerer: reg,
		BatchSize: r.batchSize, FoldRows: foldRowsSetting(r.foldRows), SyncCommit: r.syncCommit, BatchTimeout: r.batchTimeout, ReadyLag: readyLagSetting(r.readyLag), DrainTimeout: r.drain,
		SessionTimeout: r.session, HeartbeatInterval: r.heartbeat, Gaps: r.gapPolicy, Unknown: r.unknownPolicy,
		Effects: effects, Ledger: ledger, EffectHorizon: r.fx.horizon, EffectConcurrency: r.fx.concurrency,
		EffectMaxAttempts: r.fx.attempts, EffectBatchSize: r.fx.batch,
		Snapshots: policy, ScrubStore: snapshot.FolderStore{Dir: r.snaps.dir}, ScrubEvery: r.snaps.scrubEvery,
		ActivateWhenLive: r.activate, Keys: keys,
	})
	if err != nil {
		return err
	}
	r.start.Open(r.svc.newAPI(runner, r.pool, r.proj, reg, admin.Inspection{
		Pool: r.pool, Schema: c.schema, Brokers: cli.SplitList(c.brokers), Client: r.kc, Topic: c.topic,
		Projection: r.proj.Name(), Version: r.proj.Version(), ReadyLag: readyLagSetting(r.readyLag), Effects: effectNames(r.fx.names),
	}))
	return r.runUntilStopped(ctx, runner, stderr)
}

// runUntilStopped runs the runner, with the startup watch and the progress bar beside
// it, until ctx ends or start gives up.
func (r *runCmd) runUntilStopped(ctx context.Context, runner *projector.Runner, stderr io.Writer) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watched := make(chan struct{})
	go func() { defer close(watched); r.start.watch(runCtx, runner, cancel) }()
	stopBar := func() {}
	if r.progress {
		stopBar = statusview.ProgressBar(runCtx, runner, stderr)
	}
	err := runner.Run(runCtx)
	cancel(nil)
	<-watched
	stopBar()
	if cause := gaveUp(runCtx); cause != nil {
		return cause
	}
	return err
}

func parsePolicies(gaps, unknown string) (projector.GapPolicy, projector.UnknownPolicy, error) {
	var g projector.GapPolicy
	var u projector.UnknownPolicy
	switch gaps {
	case "warn":
		g = projector.GapWarn
	case "halt":
		g = projector.GapHalt
	default:
		return 0, 0, fmt.Errorf("--gaps (PROJECTOR_GAPS) %q: want warn or halt", gaps)
	}
	switch unknown {
	case "skip":
		u = projector.UnknownSkip
	case "park":
		u = projector.UnknownPark
	default:
		return 0, 0, fmt.Errorf("--unknown-types (PROJECTOR_UNKNOWN_TYPES) %q: want skip or park", unknown)
	}
	return g, u, nil
}

// foldRowsSetting turns --fold-rows into Config.FoldRows: 0 there is no folds.
func foldRowsSetting(n int) int {
	if n == 0 {
		return projector.FoldRowsOff
	}
	return n
}
