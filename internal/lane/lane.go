// Package lane is what the read model's partition worker (package projector) and
// the effect engine (internal/effects) share: a lane is one fenced position on one
// partition — the read model's, or one effect's — owned by one member of one
// generation. Env claims it, retries what touches it (internal/retry), re-reads
// it after an unknown commit, reads its partition from Kafka (Reader) and opens the
// personal data of what it read (ReadEnvelopes); Row is its line on the status
// board (a read model's batch settles it: Row.Committed, Row.Idle). Board is that
// board — the instance's Status (projector.Status is an alias of it), a Row per
// partition and per effect on one — which the runtime owns and the effect engine
// writes its rows on; Board.Progress logs catch-up progress from it. Before any lane exists, Env
// waits for the topic (WaitForTopic); while lanes run, it copies their positions
// to Kafka's group offsets for lag tools (CommitAdvisory).
//
// It sits below both: projector and internal/effects import it, it imports
// neither.
package lane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/internal/rmhook"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// Lane is one position on one partition and who owns it.
type Lane struct {
	Key    offsets.Key
	Owner  offsets.Owner
	Next   int64 // the next offset to consider; stored in PostgreSQL
	Status *Row  // its row on the status board
	Log    *zap.Logger
}

// Env is what lanes share in one Runner: the database, the offsets, Kafka, the
// retry policy and the counters.
type Env struct {
	Pool         *pgxpool.Pool
	Schema       string // the framework schema
	Offsets      *offsets.Store
	Client       *eventlog.Client // metadata and offsets
	Brokers      []string
	Topic        string
	BatchSize    int           // the most messages a read returns
	BatchTimeout time.Duration // how long a partial batch waits for more
	Keys         shred.KeyStore
	Retry        retry.Policy       // transient errors
	Transient    prometheus.Counter // transient errors retried
	Fenced       prometheus.Counter // writes refused to a member that lost its partition
	Log          *zap.Logger
}

// Do runs fn until it succeeds, returning at once on a permanent error, on
// fencing, or when ctx ends. Transient errors (readmodel.IsTransient) are retried
// by the Env's policy: counted, logged on the first attempt and every tenth, and
// shown as what the lane waits on until it recovers.
func (env *Env) Do(ctx context.Context, l *Lane, what string, fn func(context.Context) error) error {
	return env.Retry.Do(ctx, retry.Hooks{
		Retryable: func(err error) bool { return !errors.Is(err, offsets.ErrFenced) && readmodel.IsTransient(err) },
		Failed: func(attempt int, err error) {
			env.Transient.Inc()
			if attempt == 1 || attempt%10 == 0 {
				l.Log.Warn("transient error; retrying", zap.String("op", what), zap.Int("attempt", attempt), zap.Error(err))
			}
			l.Status.Set(func(s *PartitionStatus) { s.Waiting = err.Error() })
		},
		Recovered: func(attempts int) {
			l.Log.Info("recovered", zap.String("op", what), zap.Int("attempts", attempts))
			// What it waited on shows until it recovered, the attempts included.
			l.Status.Set(func(s *PartitionStatus) { s.Waiting = "" })
		},
	}, fn)
}

// claimRefused is how long a claim refused for a newer generation waits, doubling.
var claimRefused = retry.Policy{Min: time.Second, Max: 30 * time.Second, NoJitter: true}

// Claim takes the lane over and reads its stored position into Next. A claim
// refused for a newer generation is tried again within this generation rather than
// ending it (which would rebalance every partition of the member): if this member
// is the stale one, its generation ends.
func (env *Env) Claim(ctx context.Context, l *Lane) error {
	return claimRefused.Do(ctx, retry.Hooks{
		Retryable: func(err error) bool { return errors.Is(err, offsets.ErrFenced) },
		Failed: func(attempt int, _ error) {
			l.Log.Warn("claim refused: a newer generation holds the partition; waiting", zap.Duration("wait", claimRefused.Wait(attempt)))
		},
	}, func(ctx context.Context) error {
		return env.Do(ctx, l, "claim", func(ctx context.Context) error {
			next, err := env.Offsets.Claim(ctx, env.Pool, l.Key, l.Owner)
			l.Next = next
			return err
		})
	})
}

// Touch keeps the lane's claim fresh, so that it is not taken for stale.
func (env *Env) Touch(ctx context.Context, l *Lane) error {
	return env.Do(ctx, l, "refresh claim", func(ctx context.Context) error {
		return env.Offsets.Touch(ctx, env.Pool, l.Key, l.Owner)
	})
}

// Resync handles a compare-and-set that failed: if the stored owner is still this
// lane's, an earlier attempt committed (its acknowledgement was lost) and the lane
// moves to the stored position (true); otherwise it is fenced (offsets.ErrFenced).
func (env *Env) Resync(ctx context.Context, l *Lane, target int64) (bool, error) {
	pos, ok, err := env.Offsets.Get(ctx, env.Pool, l.Key)
	if err != nil {
		return false, err
	}
	if !ok || pos.Generation != l.Owner.Generation || pos.Member != l.Owner.Member {
		env.Fenced.Inc()
		l.Log.Warn("fenced: another member owns the partition; this worker stops and commits nothing",
			zap.Int32("owner_generation", pos.Generation), zap.String("owner", pos.Member))
		return false, offsets.ErrFenced
	}
	if pos.Next < l.Next {
		// PostgreSQL lost batches this owner committed: it crashed before flushing
		// them (commits without the wait for the disk, Config.SyncCommit). The
		// partition starts over from what is stored, as a new owner would.
		env.Fenced.Inc()
		l.Log.Warn("the stored position is behind what this worker committed: PostgreSQL lost the last batches in a crash; rejoining to apply them again from the log",
			zap.Int64("stored_offset", pos.Next), zap.Int64("committed_offset", l.Next))
		return false, fmt.Errorf("partition %d: stored offset %d, behind the %d this owner committed: %w", l.Key.Partition, pos.Next, l.Next, offsets.ErrFenced)
	}
	if pos.Next < target {
		return false, fmt.Errorf("partition %d: stored offset %d, expected %d or more after a lost acknowledgement", l.Key.Partition, pos.Next, target)
	}
	l.Log.Info("an earlier attempt of this batch committed; moving to the stored position", zap.Int64("next_offset", pos.Next))
	l.Next = pos.Next
	return true, nil
}

// Verify compares the stored position with the lane's, for a lane with nothing to
// write: a PostgreSQL crash may have lost the batches committed last (see Resync),
// and an idle partition writes nothing that would find out. It returns an error
// wrapping offsets.ErrFenced when the stored position is behind or the owner is
// another; nil when they agree or the database cannot be asked now (the next look
// or batch asks again).
func (env *Env) Verify(ctx context.Context, l *Lane) error {
	pos, ok, err := env.Offsets.Get(ctx, env.Pool, l.Key)
	if err != nil {
		l.Log.Debug("could not compare the stored position; the next look will", zap.Error(err))
		return nil //nolint:nilerr // not this look's to report: the next look or batch asks again
	}
	if !ok {
		return nil
	}
	if pos.Generation == l.Owner.Generation && pos.Member == l.Owner.Member && pos.Next >= l.Next {
		return nil
	}
	_, err = env.Resync(ctx, l, l.Next) // says which of the two, and counts it
	return err
}

// QueueAdvance queues the fenced write that moves the lane from Next to next;
// the flush fails with offsets.ErrFenced when the lane is no longer this owner's.
func (env *Env) QueueAdvance(w *readmodel.Writer, l *Lane, next, consumed int64) {
	sql, args := store.AdvanceOffset(env.Schema, store.Partition(l.Key), l.Owner.Generation, l.Owner.Member, l.Next, next, consumed)
	rmhook.ExecCheck(w, func(ct pgconn.CommandTag) error {
		if ct.RowsAffected() != 1 {
			return offsets.ErrFenced
		}
		return nil
	}, sql, args...)
}

// kafkaRetry is how questions to Kafka's metadata are retried: every second.
var kafkaRetry = retry.Policy{Min: time.Second, Max: time.Second, NoJitter: true}

// Bounds returns a partition's first offset and its end (the high-water mark),
// asking until Kafka answers or ctx ends.
func (env *Env) Bounds(ctx context.Context, part int) (first, last int64, err error) {
	err = kafkaRetry.Do(ctx, retry.Hooks{Failed: func(attempt int, err error) {
		if attempt%10 == 1 {
			env.Log.Warn("listing partition offsets failed; retrying", zap.Int("partition", part), zap.Error(err))
		}
	}}, func(ctx context.Context) error {
		first, last, err = env.bounds(ctx, part)
		return err
	})
	return first, last, err
}

func (env *Env) bounds(ctx context.Context, part int) (first, last int64, err error) {
	resp, err := env.Client.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		env.Topic: {kafka.FirstOffsetOf(part), kafka.LastOffsetOf(part)},
	}})
	if err != nil {
		return 0, 0, err
	}
	for _, po := range resp.Topics[env.Topic] {
		if po.Partition == part {
			return po.FirstOffset, po.LastOffset, po.Error
		}
	}
	return 0, 0, fmt.Errorf("no offsets for partition %d in the answer", part)
}

// Layout returns the topic's partitioning history, asking until Kafka answers or
// ctx ends.
func (env *Env) Layout(ctx context.Context) (eventlog.Layout, error) {
	var l eventlog.Layout
	err := kafkaRetry.Do(ctx, retry.Hooks{Failed: func(attempt int, err error) {
		if attempt%10 == 1 {
			env.Log.Warn("reading the topic's partition layout failed; retrying", zap.Error(err))
		}
	}}, func(ctx context.Context) error {
		var err error
		l, err = env.Client.ReadLayout(ctx, env.Topic)
		return err
	})
	return l, err
}

// DrainContext returns a context that outlives parent's end by at most d, so that an
// in-flight batch can finish when its generation ends or the runner stops.
func DrainContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(d, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
}
