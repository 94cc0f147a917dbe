package effects

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// batchOf returns entries for offsets [from, next).
func batchOf(from, next int64) []Entry {
	out := make([]Entry, 0, next-from)
	for o := from; o < next; o++ {
		out = append(out, Entry{Msg: kafka.Message{Offset: o}})
	}
	return out
}

// replaying is the worker of a partition that replays history: it waits for its
// effects (and would say so on its status).
func replaying(bool) {}

func TestFeedHandsOverCommittedBatchesAndReadsTheLogOnlyWhereItDoesNotReach(t *testing.T) {
	t.Parallel()
	f := NewFeed(10)
	batches, upTo := f.take(0)
	require.Empty(t, batches)
	require.Zero(t, upTo, "before the read model's claim nothing is committed")

	// A fresh claim at 40 with the effects' watermark at 0: read [0, 40) from the log.
	f.Claimed(40)
	f.Publish(context.Background(), 40, 45, batchOf(40, 45), replaying) // the feed is off: not queued
	batches, upTo = f.take(0)
	require.Empty(t, batches)
	require.Equal(t, int64(45), upTo)

	// Caught up: the feed turns on, and the next batches come in process.
	_, upTo = f.take(45)
	require.Zero(t, upTo)
	f.Publish(context.Background(), 45, 48, batchOf(45, 48), replaying)
	f.Publish(context.Background(), 48, 50, batchOf(48, 50), replaying)
	batches, upTo = f.take(45)
	require.Zero(t, upTo)
	require.Len(t, batches, 2)
	require.Equal(t, int64(50), batches[1].next)
	require.Len(t, joinBatches(batches), 5)

	// A position that moved without a batch (a resync) turns the feed off: the log
	// covers the gap.
	f.Publish(context.Background(), 50, 60, nil, replaying)
	f.Publish(context.Background(), 60, 62, batchOf(60, 62), replaying)
	batches, upTo = f.take(50)
	require.Empty(t, batches)
	require.Equal(t, int64(62), upTo)
}

func TestFeedWaitsForEffectsThatMoveWhileReplayingAndNeverWhenStalledOrLive(t *testing.T) {
	t.Parallel()
	f := NewFeed(4)
	f.Claimed(0)
	f.take(0) // on
	ctx := context.Background()
	f.Publish(ctx, 0, 4, batchOf(0, 4), replaying) // full now

	// The effects take the queue a moment later: the worker waited for room, and
	// the batch is queued, not left for the log.
	var mu sync.Mutex
	var waited []bool
	took := make(chan int, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		batches, _ := f.take(0)
		took <- len(batches)
	}()
	start := time.Now()
	f.Publish(ctx, 4, 8, batchOf(4, 8), func(w bool) { mu.Lock(); waited = append(waited, w); mu.Unlock() })
	require.Less(t, time.Since(start), fxStallAfter)
	require.Equal(t, 1, <-took)
	mu.Lock()
	require.NotEmpty(t, waited)
	require.True(t, waited[0])
	require.False(t, waited[len(waited)-1], "the wait shows on the status while it lasts, not after")
	mu.Unlock()
	batches, upTo := f.take(4)
	require.Len(t, batches, 1)
	require.Zero(t, upTo)

	// Effects that finish nothing: the worker waits fxStallAfter at most, then the
	// feed turns off and the effects read the log.
	f.Publish(ctx, 8, 12, batchOf(8, 12), replaying)
	start = time.Now()
	f.Publish(ctx, 12, 16, batchOf(12, 16), replaying)
	require.Less(t, time.Since(start), fxStallAfter+500*time.Millisecond)
	start = time.Now()
	f.Publish(ctx, 16, 20, batchOf(16, 20), replaying) // off: no wait at all
	require.Less(t, time.Since(start), 100*time.Millisecond)
	batches, upTo = f.take(8)
	require.Len(t, batches, 1, "what was queued before the stall is still handed over")
	require.Zero(t, upTo)
	batches, upTo = f.take(12)
	require.Empty(t, batches)
	require.Equal(t, int64(20), upTo)

	// A live partition's worker never waits: a full feed turns off at once.
	_, upTo = f.take(20)
	require.Zero(t, upTo) // caught up: on again
	f.Publish(ctx, 20, 24, batchOf(20, 24), nil)
	start = time.Now()
	f.Publish(ctx, 24, 28, batchOf(24, 28), nil)
	require.Less(t, time.Since(start), 100*time.Millisecond)
	batches, upTo = f.take(20)
	require.Len(t, batches, 1)
	require.Zero(t, upTo)
	batches, upTo = f.take(24)
	require.Empty(t, batches)
	require.Equal(t, int64(28), upTo, "what did not fit is read from the log")
}
