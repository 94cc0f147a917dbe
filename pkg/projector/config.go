package projector

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/sideeffects"
	"github.com/projector/projector/pkg/snapshot"
)

// Defaults for Config.
const (
	BatchSizeDefault         = 1000
	FoldRowsDefault          = 8000
	FoldRowsOff              = -1 // Config.FoldRows: one read per transaction
	BatchTimeoutDefault      = 20 * time.Millisecond
	ReadyLagDefault          = 1000 // per partition: within one default batch of the log end
	DrainTimeoutDefault      = 10 * time.Second
	SessionTimeoutDefault    = 10 * time.Second
	HeartbeatIntervalDefault = time.Second
	RebalanceTimeoutDefault  = 30 * time.Second
	RetryBackoffMinDefault   = 100 * time.Millisecond
	RetryBackoffMaxDefault   = 5 * time.Second
	CommitIntervalDefault    = 5 * time.Second
	RetryPollDefault         = time.Second
	ProgressIntervalDefault  = 10 * time.Second
	ScrubEveryDefault        = 30 * time.Second
)

// ReadyLagZero as Config.ReadyLag or Inspection.ReadyLag asks for a lag of 0: a
// partition is live only once it has applied everything up to its log end. (Zero
// itself means ReadyLagDefault, as every zero setting means its default.)
const ReadyLagZero = -1

// ReadyRule says how readiness is decided, in the words status reports print.
const ReadyRule = "per partition: a partition is live when its lag (log end minus stored position) is at most ready_lag; ready when every partition is live"

// effectiveReadyLag turns a ReadyLag setting into the lag it allows.
func effectiveReadyLag(v int64) int64 {
	switch v {
	case 0:
		return ReadyLagDefault
	case ReadyLagZero:
		return 0
	}
	return v
}

// GapPolicy says what a gap in an aggregate's sequence does.
type GapPolicy int

const (
	// GapWarn applies the event and reports the gap (log and metric).
	GapWarn GapPolicy = iota
	// GapHalt parks the event, and with it the aggregate, until the gap is resolved.
	GapHalt
)

// UnknownPolicy says what an event of a type absent from the registry does.
type UnknownPolicy int

const (
	// UnknownSkip skips it (counted as ignored); its sequence still counts.
	UnknownSkip UnknownPolicy = iota
	// UnknownPark parks it, and its aggregate behind it (the strict policy).
	UnknownPark
)

// Config configures a Runner. Zero values mean the defaults.
type Config struct {
	Brokers    []string              // required
	Topic      string                // required: the event topic
	Projection *readmodel.Projection // required
	Pool       *pgxpool.Pool         // required: the read model's database
	GroupID    string                // Kafka group; default "projector.NAME.vVERSION"
	Schema     string                // the framework's schema; default readmodel.FrameworkSchemaDefault
	Logger     *zap.Logger           // default zap.NewNop()
	Registerer prometheus.Registerer // where metrics register; default none

	BatchSize int // most events in one read, and in one transaction when the partition is live (default BatchSizeDefault)
	// FoldRows bounds a fold: while a partition replays (the log holds another
	// full read at hand), its transaction stays open across reads, so that the rows
	// and sequence marks its events touch again and again are loaded and written
	// once, not once per read. Only the rows stay in memory, not the events. A fold
	// commits when it holds this many rows and marks, after two seconds, or when the
	// log has no full read at hand (default FoldRowsDefault; FoldRowsOff: one read
	// per transaction). The memory it takes grows with it: about the size of a row
	// per row, per partition (docs/operations.md, Memory).
	FoldRows int
	// FoldReadsAtOnce bounds the folds reading at once, across partitions: a fold
	// keeps its place from its first read to its last, and holds each read's events
	// from its decoding to its last handler. One per core keeps the cores busy (the
	// database works while a fold waits for it); default GOMAXPROCS, at least two.
	// It bounds a replay's memory and the garbage collector's work under the memory
	// limit: a fold's reads never wait for another transaction's rows while it holds
	// its place (docs/operations.md, Folds).
	FoldReadsAtOnce int
	// SyncCommit makes each batch's COMMIT wait until PostgreSQL has flushed it to
	// disk (synchronous_commit on). By default a batch commits without that wait
	// (synchronous_commit off for its transaction only): a PostgreSQL or machine
	// crash can then lose the batches committed in its last moments (PostgreSQL
	// flushes within three wal_writer_delay, 600 ms by default), always whole and
	// together with their positions, never half of one, and the runner applies
	// them again from the log. The read model stays the fold of the log and
	// effects stay once (the Redis ledger has them). Rows shared by partitions are
	// locked until the commit, so the wait for the disk would be paid by every
	// partition in turn. See docs/operations.md.
	SyncCommit   bool
	BatchTimeout time.Duration // how long a partial batch waits for more (default BatchTimeoutDefault)
	// ReadyLag is per partition: a partition is live when its lag (log end minus
	// stored position) is at most this, and the instance is ready when every partition
	// it owns is live (default ReadyLagDefault; ReadyLagZero for a lag of 0).
	ReadyLag     int64
	DrainTimeout time.Duration // bound on finishing, at revocation or stop, the batch in flight and the effect runs in flight (default DrainTimeoutDefault)

	SessionTimeout    time.Duration // Kafka group session timeout (default SessionTimeoutDefault)
	HeartbeatInterval time.Duration // Kafka group heartbeat (default HeartbeatIntervalDefault)
	RebalanceTimeout  time.Duration // Kafka group rebalance timeout (default RebalanceTimeoutDefault)
	CommitInterval    time.Duration // advisory Kafka offset commits (default CommitIntervalDefault)

	RetryBackoffMin time.Duration // first wait after a transient error (default RetryBackoffMinDefault)
	RetryBackoffMax time.Duration // longest wait between retries (default RetryBackoffMaxDefault)
	RetryPoll       time.Duration // how often a worker looks for parked events to retry (default RetryPollDefault)
	ProgressEvery   time.Duration // progress log interval while replaying (default ProgressIntervalDefault)

	Gaps    GapPolicy     // default GapWarn
	Unknown UnknownPolicy // default UnknownSkip

	// Keys decrypt events' personal data (package shred); without them an event with
	// encrypted fields parks. Events of forgotten subjects reach handlers and effects
	// with those fields redacted.
	Keys shred.KeyStore

	// Effects run after the read model commits their events (see package sideeffects).
	Effects []*sideeffects.Effect
	// Ledger is the Redis idempotency ledger; required with Effects.
	Ledger *sideeffects.Ledger
	// EffectHorizon: an effect starting with no watermark fires only for events newer
	// than this (default: the ledger's retention).
	EffectHorizon time.Duration
	// EffectConcurrency bounds the runs of one effect on one partition at once
	// (default EffectConcurrencyDefault). A run holds its place until the ledger
	// has it marked done, so it is also the most runs of an effect that a crash can
	// run again on a partition (with the same keys).
	EffectConcurrency int
	// EffectMaxAttempts: a run that fails this often parks (default EffectMaxAttemptsDefault).
	EffectMaxAttempts int
	// EffectBatchSize is the most keys reserved in the ledger together, in one Redis
	// round trip (default EffectBatchSizeDefault). Each run is marked done on its
	// own as it finishes (pipelined with the others' marks), so the batch does not
	// widen what a crash re-runs; reserved runs that had not started wait, after a
	// crash, for their lease to expire.
	EffectBatchSize int

	// Snapshots, when set, are taken by the instance that owns partition 0 (count and
	// interval triggers) or that applied the chosen event (type triggers).
	Snapshots *SnapshotPolicy

	// ScrubStore is a snapshot store this runner keeps free of forgotten subjects'
	// data, whoever wrote its snapshots (a nightly job, another service, this
	// runner's policy): every snapshot of the projection version that may hold some
	// (forget.InSnapshots) is rewritten without it (forget.ScrubSnapshots) at start,
	// within a second of this runner applying a SubjectForgotten, and every
	// ScrubEvery. The store of Snapshots is kept clean as well, ScrubStore or not.
	// Needs Keys (without them nothing is ever decrypted, so nothing to forget).
	// Instances sharing a store take turns (see forget.ScrubSnapshots).
	ScrubStore snapshot.Store
	// ScrubEvery: how often the stores are checked besides (default
	// ScrubEveryDefault). A check that finds nothing to rewrite costs a read of the
	// manifests and one query of the key store.
	ScrubEvery time.Duration

	// ActivateWhenLive points the projection's stable views at this version once
	// every partition is live, unless it is active already (blue/green; see Versions).
	ActivateWhenLive bool

	// StopAt, when set, bounds the run: each partition is applied up to (not
	// including) its offset here, and Run returns once every partition got there.
	// Point-in-time replays use it.
	StopAt map[int]int64
}

// Defaults for the effect settings.
const (
	EffectConcurrencyDefault = 4
	EffectMaxAttemptsDefault = 5
	EffectBatchSizeDefault   = 16
)

func (c Config) withDefaults() Config {
	if c.GroupID == "" && c.Projection != nil {
		c.GroupID = fmt.Sprintf("projector.%s.v%d", c.Projection.Name(), c.Projection.Version())
	}
	if c.Schema == "" {
		c.Schema = readmodel.FrameworkSchemaDefault
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.FoldRows == 0 {
		c.FoldRows = FoldRowsDefault
	}
	if c.FoldReadsAtOnce == 0 {
		c.FoldReadsAtOnce = max(2, runtime.GOMAXPROCS(0))
	}
	if c.BatchSize == 0 {
		c.BatchSize = BatchSizeDefault
	}
	def(&c.BatchTimeout, BatchTimeoutDefault)
	def(&c.DrainTimeout, DrainTimeoutDefault)
	def(&c.SessionTimeout, SessionTimeoutDefault)
	def(&c.HeartbeatInterval, HeartbeatIntervalDefault)
	def(&c.RebalanceTimeout, RebalanceTimeoutDefault)
	def(&c.CommitInterval, CommitIntervalDefault)
	def(&c.RetryBackoffMin, RetryBackoffMinDefault)
	def(&c.RetryBackoffMax, RetryBackoffMaxDefault)
	def(&c.RetryPoll, RetryPollDefault)
	def(&c.ProgressEvery, ProgressIntervalDefault)
	def(&c.ScrubEvery, ScrubEveryDefault)
	if c.EffectHorizon == 0 && c.Ledger != nil {
		c.EffectHorizon = c.Ledger.Retention()
	}
	if c.EffectConcurrency == 0 {
		c.EffectConcurrency = EffectConcurrencyDefault
	}
	if c.EffectMaxAttempts == 0 {
		c.EffectMaxAttempts = EffectMaxAttemptsDefault
	}
	if c.EffectBatchSize == 0 {
		c.EffectBatchSize = EffectBatchSizeDefault
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("empty Brokers"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("empty Topic"))
	}
	if c.Projection == nil {
		errs = append(errs, errors.New("nil Projection"))
	}
	if c.Pool == nil {
		errs = append(errs, errors.New("nil Pool"))
	}
	if c.FoldRows < FoldRowsOff {
		errs = append(errs, fmt.Errorf("FoldRows %d: must be at least 0 (FoldRowsOff: no folds)", c.FoldRows))
	}
	if c.FoldReadsAtOnce < 0 {
		errs = append(errs, fmt.Errorf("FoldReadsAtOnce %d: must be at least 1 (0: the default)", c.FoldReadsAtOnce))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("BatchSize %d: must be at least 1", c.BatchSize))
	}
	if c.ReadyLag < 0 && c.ReadyLag != ReadyLagZero {
		errs = append(errs, fmt.Errorf("ReadyLag %d: must not be negative (ReadyLagZero asks for 0)", c.ReadyLag))
	}
	for name, d := range map[string]time.Duration{
		"BatchTimeout": c.BatchTimeout, "DrainTimeout": c.DrainTimeout, "SessionTimeout": c.SessionTimeout,
		"HeartbeatInterval": c.HeartbeatInterval, "RebalanceTimeout": c.RebalanceTimeout, "CommitInterval": c.CommitInterval,
		"RetryBackoffMin": c.RetryBackoffMin, "RetryBackoffMax": c.RetryBackoffMax, "RetryPoll": c.RetryPoll, "ProgressEvery": c.ProgressEvery, "ScrubEvery": c.ScrubEvery,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", name, d))
		}
	}
	if len(c.Effects) > 0 && c.Ledger == nil {
		errs = append(errs, errors.New("effects need a Ledger"))
	}
	seen := map[string]bool{}
	for _, e := range c.Effects {
		if e == nil || seen[e.Name()] {
			errs = append(errs, errors.New("nil or duplicate effect in Effects"))
			continue
		}
		seen[e.Name()] = true
	}
	if c.EffectConcurrency < 1 || c.EffectMaxAttempts < 1 || c.EffectBatchSize < 1 || c.EffectHorizon < 0 {
		errs = append(errs, fmt.Errorf("EffectConcurrency %d, EffectMaxAttempts %d and EffectBatchSize %d must be at least 1, EffectHorizon %v not negative",
			c.EffectConcurrency, c.EffectMaxAttempts, c.EffectBatchSize, c.EffectHorizon))
	}
	if c.HeartbeatInterval >= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("HeartbeatInterval %v must be below SessionTimeout %v", c.HeartbeatInterval, c.SessionTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("projector: config: %w", err)
	}
	return nil
}
