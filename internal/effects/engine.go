package effects

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

// Config is what the engine runs: package projector fills it from its Config.
type Config struct {
	Projection   *readmodel.Projection
	Schema       string // the framework schema
	Effects      []*sideeffects.Effect
	Ledger       *sideeffects.Ledger
	Horizon      time.Duration // an effect starting with no watermark fires only for events newer than this
	Concurrency  int           // runs of one effect on one partition at once
	MaxAttempts  int           // a run that fails this often parks
	ReserveBatch int           // keys reserved in the ledger together
	FeedBatches  int           // the feed's bound, in read-model batches
	DrainTimeout time.Duration // bound on finishing in-flight runs when the generation ends
	RetryPoll    time.Duration // how often parked runs an operator asked to retry are looked for
	Fire         retry.Policy  // how a failing run is retried, up to MaxAttempts
	Board        Board
	Runs         *prometheus.CounterVec // by effect and outcome
	LogReads     prometheus.Counter     // events the dispatchers read from the log themselves
	Log          *zap.Logger
}

// Board is the runtime's status board, where each effect on each partition has
// its row and each outcome its count.
type Board interface {
	EffectPartition(effect string, partition int) *lane.Row
	CountEffect(effect, outcome string, n int64)
}

// Entry is one committed event the read model's worker hands to the effects:
// read, its personal data opened, and decoded when the projection knows its type.
type Entry struct {
	Msg     kafka.Message
	Event   events.Event
	Decoded *events.Decoded // nil when not decoded with the projection's registry
	Unread  error           // the record's own problem: not an event, or its personal data unreadable
}

// Engine runs a projection's effects, a dispatcher per partition (Run).
type Engine struct {
	cfg Config
	env *lane.Env
}

// New returns the engine of cfg's effects over the lanes of env.
func New(cfg Config, env *lane.Env) *Engine {
	if cfg.LogReads == nil {
		cfg.LogReads = prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_effect_log_reads_total"}) // counted, not registered
	}
	return &Engine{cfg: cfg, env: env}
}

// NewFeed returns the feed from a partition's worker to its dispatcher.
func (e *Engine) NewFeed() *Feed { return NewFeed(e.cfg.FeedBatches * e.env.BatchSize) }

// prepare reads msgs as entries for every effect at once, opening the personal data
// of the types an effect reacts to and decoding those the projection knows.
func (e *Engine) prepare(ctx context.Context, msgs []kafka.Message) ([]Entry, error) {
	reg := e.cfg.Projection.Registry()
	envs, err := e.env.ReadEnvelopes(ctx, reg, msgs, e.ReactsTo)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(msgs))
	for i, m := range msgs {
		out[i] = Entry{Msg: m, Event: envs[i].Event, Unread: envs[i].Problem}
		if out[i].Unread != nil || !reg.Known(out[i].Event.Type) || !e.ReactsTo(out[i].Event.Type) {
			continue
		}
		if d, err := reg.Decode(out[i].Event); err == nil {
			out[i].Decoded = &d
		}
	}
	return out, nil
}

// text makes a string safe for a PostgreSQL text column: a poison event's id or
// type may hold invalid UTF-8 or NUL bytes, and parking it must not fail on them.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
