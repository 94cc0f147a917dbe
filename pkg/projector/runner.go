package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/activation"
	"github.com/projector/projector/internal/effects"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/internal/metrics"
	"github.com/projector/projector/internal/parking"
	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/internal/snapshotting"
	"github.com/projector/projector/internal/stopat"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

// Runner builds one projection version from one topic and keeps it current.
type Runner struct {
	cfg      Config
	log      *zap.Logger
	offsets  *offsets.Store
	env      *lane.Env       // what the read model's and the effects' lanes share
	fx       *effects.Engine // the effects; nil without
	parking  parking.Lot     // the parked table
	metrics  *metrics.Set
	status   *lane.Board
	client   *eventlog.Client // metadata and offsets; its connections close when Run returns
	readyLag int64            // the lag a live partition may have (Config.ReadyLag resolved)
	beginSQL []string         // the statements that open a batch transaction: BEGIN, its search path and commit durability
	foldSQL  []string         // a fold's: beginSQL, and foldLockTimeout
	looked   func()           // tests: told of each look of the analyze loop (OnAnalyzeLook)
	// foldSlots bounds the folds open at once below the pool's size: a fold holds
	// its connection while it reads and decodes the next read, whose personal data
	// keys may be looked up in the same pool.
	foldSlots chan struct{}
	// readSlots bounds the fold reads decoded and applied at once
	// (Config.FoldReadsAtOnce): the events of a read are held from its decoding to
	// its last handler.
	readSlots chan struct{}

	snaps   *snapshotting.Snapshotter
	scrubs  *snapshotting.Scrubber
	storeMu sync.Mutex // one of taking, pruning and rewriting snapshots at a time

	layoutMu    sync.Mutex
	layoutGen   int32
	topicLayout *eventlog.Layout

	mu        sync.Mutex
	fatalOnce sync.Once
	fatalErr  error
	cancelRun context.CancelFunc
}

// New validates cfg and returns a Runner. It does not connect: Run does.
func New(cfg Config) (*Runner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With(zap.String("projection", cfg.Projection.Name()), zap.Int("version", cfg.Projection.Version()))
	m, err := metrics.New(cfg.Registerer, cfg.Projection.Name(), cfg.Projection.Version(), cfg.Topic)
	if err != nil {
		return nil, err
	}
	r := &Runner{
		cfg: cfg, log: log,
		offsets: offsets.NewStore(cfg.Schema),
		parking: parking.Lot{Pool: cfg.Pool, Schema: cfg.Schema},
		metrics: m,
		status: lane.NewBoard(Status{
			Projection: cfg.Projection.Name(), Version: cfg.Projection.Version(), Topic: cfg.Topic, Group: cfg.GroupID,
			ReadyLag: effectiveReadyLag(cfg.ReadyLag), ReadyRule: ReadyRule,
		}),
		client:   eventlog.NewClient(cfg.Brokers),
		readyLag: effectiveReadyLag(cfg.ReadyLag),
		beginSQL: []string{`BEGIN`, `SET LOCAL search_path TO ` + pgx.Identifier{cfg.Projection.Schema()}.Sanitize() + `, public`},
	}
	if !cfg.SyncCommit {
		r.beginSQL = append(r.beginSQL, `SET LOCAL synchronous_commit TO off`)
	}
	r.foldSQL = append(slices.Clip(r.beginSQL), `SET LOCAL lock_timeout = '`+foldLockTimeout+`'`)
	r.env = &lane.Env{
		Pool: cfg.Pool, Schema: cfg.Schema, Offsets: r.offsets, Client: r.client, Brokers: cfg.Brokers, Topic: cfg.Topic,
		BatchSize: cfg.BatchSize, BatchTimeout: cfg.BatchTimeout, Keys: cfg.Keys,
		Retry:     retry.Policy{Min: cfg.RetryBackoffMin, Max: cfg.RetryBackoffMax},
		Transient: m.Transient, Fenced: m.Fenced, Log: log,
	}
	r.fx = r.newEffects()
	r.snaps = snapshotting.NewSnapshotter(r.snapshotting(), cfg.Snapshots)
	r.scrubs = snapshotting.NewScrubber(r.snapshotting(), cfg.ScrubStore, cfg.Snapshots, cfg.ScrubEvery)
	r.foldSlots = make(chan struct{}, max(1, int(cfg.Pool.Config().MaxConns)-2))
	r.readSlots = make(chan struct{}, cfg.FoldReadsAtOnce)
	return r, nil
}

// Status returns what this instance is doing now.
func (r *Runner) Status() Status { return r.status.Snapshot() }

// Ready reports whether the instance has joined its group and every partition it
// owns is live (its lag at most ReadyLag: the rule is per partition).
func (r *Runner) Ready() bool { return r.status.Snapshot().Ready }

// Setup applies the framework schema's pending migrations and the projection's
// (readmodel.Setup, under an advisory lock, so that instances starting together
// migrate once). Run calls it; tools that only read may call it alone.
func (r *Runner) Setup(ctx context.Context) error {
	return readmodel.Setup(ctx, r.cfg.Pool, r.cfg.Schema, r.cfg.Projection)
}

// Run sets up, joins the consumer group and runs a worker per assigned partition
// until ctx ends, then leaves the group; an in-flight batch gets DrainTimeout to
// commit. It returns nil after a clean stop, or the error that stopped it. Every
// goroutine it started and every Kafka connection it opened is closed by then.
func (r *Runner) Run(ctx context.Context) error {
	// Deferred first, so it runs last: after the group is closed, which waits for
	// every worker of the generation.
	defer r.client.Close()
	if err := r.Setup(ctx); err != nil {
		return err
	}
	if err := r.env.WaitForTopic(ctx, r.status); err != nil {
		return err
	}
	// A forgetting whose SubjectForgotten was never published (the producer failed
	// after deleting the key), or is still far behind in the log, is purged now.
	if n, err := forget.Purge(ctx, r.cfg.Pool, r.cfg.Projection, r.cfg.Keys, time.Time{}); err != nil {
		r.log.Warn("purging forgotten subjects at start failed; their SubjectForgotten events will", zap.Error(err))
	} else if n > 0 {
		r.log.Info("purged forgotten subjects", zap.Int("subjects", n))
	}
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: r.cfg.GroupID, Brokers: r.cfg.Brokers, Topics: []string{r.cfg.Topic},
		HeartbeatInterval: r.cfg.HeartbeatInterval, SessionTimeout: r.cfg.SessionTimeout,
		RebalanceTimeout: r.cfg.RebalanceTimeout, JoinGroupBackoff: time.Second,
		WatchPartitionChanges: true, PartitionWatchInterval: 5 * time.Second,
		StartOffset: kafka.FirstOffset, Timeout: 10 * time.Second,
		ErrorLogger: kafka.LoggerFunc(func(f string, a ...any) { r.log.Sugar().Warnf("kafka group: "+f, a...) }),
	})
	if err != nil {
		return fmt.Errorf("projector: consumer group: %w", err)
	}
	r.log.Info("started", zap.String("topic", r.cfg.Topic), zap.String("group", r.cfg.GroupID))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.cancelRun = cancel
	stopProgress := r.progressLoop(runCtx)
	defer stopProgress()
	if r.scrubs != nil {
		scrubbed := make(chan struct{})
		go func() { defer close(scrubbed); r.scrubs.Loop(runCtx) }()
		defer func() { cancel(); <-scrubbed }()
	}
	if r.cfg.StopAt != nil {
		reached := make(chan struct{})
		go func() { defer close(reached); r.stopWhenReached(runCtx, cancel) }()
		defer func() { cancel(); <-reached }()
	}
	for {
		gen, err := group.Next(runCtx)
		if err != nil {
			if runCtx.Err() != nil {
				break
			}
			if errors.Is(err, kafka.InvalidSessionTimeout) {
				// A setting the broker refuses: retrying cannot help.
				r.fail(fmt.Errorf("projector: SessionTimeout %v is outside the broker's group.min/max.session.timeout.ms: %w",
					r.cfg.SessionTimeout, err))
				continue
			}
			r.log.Warn("joining the group failed; retrying", zap.Error(err))
			continue
		}
		r.startGeneration(gen)
	}
	// Closing the group ends the generation: workers see their context end, finish
	// or abandon their batch within DrainTimeout, and the member leaves the group.
	closeErr := group.Close()
	r.status.Left()
	if err := r.fatalError(); err != nil {
		return err
	}
	if closeErr != nil && !errors.Is(closeErr, kafka.ErrGroupClosed) {
		r.log.Warn("leaving the group", zap.Error(closeErr))
	}
	r.log.Info("stopped")
	return nil
}

func (r *Runner) startGeneration(gen *kafka.Generation) {
	var parts []int
	for _, a := range gen.Assignments[r.cfg.Topic] {
		parts = append(parts, a.ID)
	}
	r.status.Joined(gen.ID, gen.MemberID, parts)
	r.log.Info("joined generation", zap.Int32("generation", gen.ID), zap.String("member", gen.MemberID), zap.Ints("partitions", parts))
	for _, p := range parts {
		gen.Start(func(ctx context.Context) { r.settle(ctx, fmt.Sprintf("partition %d", p), r.runPartition(ctx, gen, p)) })
	}
	if len(parts) > 0 {
		gen.Start(func(ctx context.Context) { r.env.CommitAdvisory(ctx, gen, r.status, r.cfg.CommitInterval) })
	}
	if slices.Contains(parts, 0) {
		gen.Start(r.analyzeLoop) // one instance keeps the statistics fresh
	}
	if r.cfg.ActivateWhenLive && slices.Contains(parts, 0) {
		gen.Start(activation.Activator{Pool: r.cfg.Pool, Schema: r.cfg.Schema, Projection: r.cfg.Projection.Name(),
			Version: r.cfg.Projection.Version(), Views: r.cfg.Projection.Schema(), Topic: r.cfg.Topic,
			Client: r.client, Offsets: r.offsets, ReadyLag: r.readyLag, Log: r.log}.Loop)
	}
	if r.snaps != nil && len(parts) > 0 {
		owner := slices.Contains(parts, 0) // the count and interval triggers are its
		gen.Start(func(ctx context.Context) { r.snaps.Loop(ctx, owner) })
	}
}

// settle decides what a worker's return means. Any worker returning ends the
// member's generation (kafka-go), so the member rejoins and is given partitions afresh.
func (r *Runner) settle(ctx context.Context, what string, err error) {
	switch {
	case err == nil, ctx.Err() != nil:
		// The generation ended (rebalance or stop); a permanent error, if that was
		// one, recurs in the next generation.
	case errors.Is(err, offsets.ErrFenced):
		// Another member owns the partition: rejoin.
	default:
		r.fail(fmt.Errorf("%s: %w", what, err))
	}
}

// stopWhenReached ends a bounded run once every partition's stored offset, the
// read model's and each effect's, reached its StopAt (see internal/stopat).
func (r *Runner) stopWhenReached(ctx context.Context, stop context.CancelFunc) {
	b := stopat.Bound{At: r.cfg.StopAt, Topic: r.cfg.Topic, Pool: r.cfg.Pool, Offsets: r.offsets,
		Projection: r.cfg.Projection.Name(), Version: r.cfg.Projection.Version()}
	for _, eff := range r.cfg.Effects {
		b.Effects = append(b.Effects, eff.Name())
	}
	if b.Wait(ctx) {
		r.log.Info("reached the end of the bounded run")
		stop()
	}
}

// fail records a fatal error and stops Run, which returns it.
func (r *Runner) fail(err error) {
	r.fatalOnce.Do(func() {
		r.log.Error("stopping on a permanent error", zap.Error(err))
		r.mu.Lock()
		r.fatalErr = err
		r.mu.Unlock()
		r.cancelRun()
	})
}

func (r *Runner) fatalError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fatalErr
}

// progressLoop logs catch-up progress while any partition replays and keeps the
// lag gauges current (lane.Board.Progress); the func it returns waits for it.
func (r *Runner) progressLoop(ctx context.Context) func() {
	done := make(chan struct{})
	go func() { defer close(done); r.status.Progress(ctx, r.cfg.ProgressEvery, r.metrics.Lag, r.log) }()
	return func() { <-done }
}

// analyzeEvery is how often the runner looks for tables to analyze (analyzeLoop).
const analyzeEvery = time.Second

// analyzeLoop refreshes the planner's statistics of the tables that grew. Tables
// filled from empty, by a replay or by a new service's first live events, keep the
// statistics of an empty table until autovacuum comes by (a minute by default), and
// the plans PostgreSQL caches for the batches' statements meanwhile scan them
// whole: measured here, a 100,000-event replay ran at 14–18k events/s with the
// default autovacuum and 32–40k with statistics kept fresh, and a live service
// starting empty at 2,000 events/s spent half a core looking up sequence marks by
// sequential scans (0.5 ms each instead of 0.03), fell behind, and its latency
// grew to seconds. A table is analyzed when it holds a thousand rows more than
// twice the rows of its last analysis: when its statistics are off by a multiple,
// which is what makes plans go wrong (autovacuum refreshes them at a tenth, and
// keeps the statistics of tables updated in place; see store.Analyze).
//
// The tables are looked at every second, however long the runner has run: a look
// is one query of pg_stat_user_tables. A service started before its traffic (a new
// one, deployed ahead of its producers) fills its tables minutes after it started.
// A loop that backed off (looks at 1, 3, 7, 15, 31 s after the runner joined, then
// every minute) left such a service, and even the bench's live projector (started a
// second before its traffic), planning its sequence-mark lookups on an empty table's
// statistics for seconds: every lookup read all
// the projection's marks (the primary key's projection and version, the subjects
// as a filter). Measured at 2,000 events/s for 30 s, those lookups took 10–23 s of
// PostgreSQL's time with the backoff and 1.5–2.8 s without.
func (r *Runner) analyzeLoop(ctx context.Context) {
	for {
		if retry.Sleep(ctx, analyzeEvery) != nil {
			return
		}
		if r.looked != nil {
			r.looked()
		}
		if _, err := store.Analyze(ctx, r.cfg.Pool, []string{r.cfg.Projection.Schema(), r.cfg.Schema}, 1000, 1); err != nil && ctx.Err() == nil {
			r.log.Debug("analyze", zap.Error(err))
		}
	}
}
