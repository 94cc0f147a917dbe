package lane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/retry"
)

// WaitForTopic waits until the topic's partitions are known: Kafka reachable, the
// topic created. Until then it warns on every attempt, every few seconds, naming the
// brokers and the error, and the board's Status.Waiting says the same.
func (env *Env) WaitForTopic(ctx context.Context, board *Board) error {
	brokers := strings.Join(env.Brokers, ",")
	return topicRetry.Do(ctx, retry.Hooks{
		Failed: func(attempt int, err error) {
			board.Wait(fmt.Sprintf("topic %s on Kafka at %s: %v", env.Topic, brokers, err))
			env.Log.Warn("waiting for the topic: Kafka unreachable or the topic missing; retrying",
				zap.String("brokers", brokers), zap.String("topic", env.Topic), zap.Int("attempt", attempt),
				zap.String("every", topicRetry.Max.String()), zap.Error(err))
		},
		Recovered: func(attempts int) {
			env.Log.Info("the topic answers: starting", zap.String("topic", env.Topic), zap.Int("attempts", attempts))
		},
	}, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, topicAttemptTimeout)
		defer cancel()
		n, err := env.Client.Partitions(actx, env.Topic)
		if err == nil && n == 0 {
			err = errors.New("the topic has no partitions")
		}
		if err == nil {
			board.ReachedTopic()
		}
		return err
	})
}

// How WaitForTopic retries: a bound on each attempt, and the pause between two.
const topicAttemptTimeout = 5 * time.Second

var topicRetry = retry.Policy{Min: 2 * time.Second, Max: 2 * time.Second, NoJitter: true}

// CommitAdvisory copies the positions on the board (those stored in PostgreSQL)
// to Kafka's group offsets every so often, for lag tools only; the runtime never
// reads them. It returns when ctx ends.
func (env *Env) CommitAdvisory(ctx context.Context, gen *kafka.Generation, board *Board, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := map[int]int64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := board.Snapshot()
		offs := map[int]int64{}
		for _, p := range st.Partitions {
			if p.Next > 0 && p.Next != last[p.Partition] && p.State != StateClaiming {
				offs[p.Partition] = p.Next
			}
		}
		if len(offs) == 0 {
			continue
		}
		if err := gen.CommitOffsets(map[string]map[int]int64{env.Topic: offs}); err != nil {
			env.Log.Debug("advisory offset commit failed", zap.Error(err))
			continue
		}
		for p, o := range offs {
			last[p] = o
		}
	}
}
