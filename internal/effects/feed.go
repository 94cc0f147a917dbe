package effects

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// fxStallAfter is how long the partition's effects may go without finishing a run
// or a batch, while the feed is full, before the read model stops waiting for them.
const fxStallAfter = time.Second

// Feed hands a partition's committed batches from its read-model worker to its
// effect dispatcher, in process: the events were read from Kafka and decrypted once,
// for the read model, and the effects run on the same entries.
//
// The feed is bounded (capacity entries). When it is full while the partition
// replays history, the worker waits for room — back-pressure: effects slower than
// the replay slow it to their pace, and the log is still read once — but only while
// the effects make progress. Effects that finish nothing for fxStallAfter (a mail
// server or Redis down) do not hold the read model, nor do effects behind a live
// partition (its lag within ReadyLag: readiness must not hang on a mail server): the
// feed turns off, the worker goes on, and the dispatcher later reads what it missed
// from the log itself — once for all the partition's effects — until it has caught
// up with the read model, when the feed turns on again.
type Feed struct {
	mu        sync.Mutex
	committed int64        // the read model's stored position; -1 until its worker claimed the partition
	on        bool         // batches are queued, contiguous from end's value when it turned on
	end       int64        // when on: where the next batch must start to be queued
	queue     []fxBatch    // committed batches, contiguous, not yet taken
	queued    int          // entries in queue
	capacity  int          // the most entries queued (a larger batch is queued alone)
	progress  atomic.Int64 // when (unix ns) the effects last finished a run or a batch, or took from the feed
	stopped   bool         // the dispatcher stopped: nothing is queued any more
	spans     []Span       // committed ranges not queued (folds'), contiguous, for lanes that may pass them unread
	wake      chan struct{}
	room      chan struct{}
}

// fxBatch is a committed batch: its entries and the positions before and after it.
type fxBatch struct {
	from, next int64
	entries    []Entry
}

// NewFeed returns a feed of capacity entries, off until its dispatcher has caught up.
func NewFeed(capacity int) *Feed {
	f := &Feed{committed: -1, capacity: capacity, wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	f.progressed()
	return f
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Claimed records the read model's stored position after a claim: what lies below
// it is committed, and nothing is queued yet.
func (f *Feed) Claimed(next int64) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.committed, f.on, f.queue, f.queued, f.spans = next, false, nil, 0, nil
	f.mu.Unlock()
	signal(f.wake)
}

// Publish records a committed batch that moved the stored position from from to
// next, and queues its entries when the feed is on and the batch continues the
// queue. A full queue is waited for while the effects make progress, when waiting is
// not nil (it says so meanwhile); when they stall, or ctx ends, or waiting is nil,
// the feed turns off instead. No entries (a position that moved without a batch of
// this worker's) turn it off.
func (f *Feed) Publish(ctx context.Context, from, next int64, entries []Entry, waiting func(bool)) {
	if f == nil {
		return
	}
	defer signal(f.wake)
	f.mu.Lock()
	defer f.mu.Unlock()
	// The position moves once the batch is queued, or the feed off: the dispatcher
	// must not read from the log what is about to be handed to it.
	defer func() { f.committed = max(f.committed, next) }()
	if !f.on || f.stopped || len(entries) == 0 || from != f.end {
		f.on = false
		return
	}
	for f.queued > 0 && f.queued+len(entries) > f.capacity {
		stalled := time.Since(time.Unix(0, f.progress.Load()))
		if waiting == nil || stalled >= fxStallAfter || ctx.Err() != nil {
			f.on = false
			return
		}
		f.mu.Unlock()
		waiting(true)
		t := time.NewTimer(fxStallAfter - stalled)
		select {
		case <-f.room:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		waiting(false)
		f.mu.Lock()
		if !f.on {
			return
		}
	}
	f.queue = append(f.queue, fxBatch{from: from, next: next, entries: entries})
	f.queued += len(entries)
	f.end = next
}

// stop turns the feed off for good: the dispatcher has stopped, and the worker must
// not wait for it.
func (f *Feed) stop() {
	f.mu.Lock()
	f.stopped, f.on, f.queue, f.queued, f.spans = true, false, nil, 0, nil
	f.mu.Unlock()
	signal(f.room)
}

// progressed records that the effects finished something: a full feed is waited for.
func (f *Feed) progressed() {
	if f != nil {
		f.progress.Store(time.Now().UnixNano())
	}
}

// take returns the work for a dispatcher whose effects have run everything below
// pos: the queued batches, when they continue from pos; otherwise the position up to
// which it must read the log itself (the start of the queue, or the read model's
// stored position). It returns neither when nothing is committed beyond pos, and
// then turns the feed on, if it was off: the dispatcher has caught up.
func (f *Feed) take(pos int64) (batches []fxBatch, readUpTo int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer signal(f.room)
	f.progressed()
	for len(f.queue) > 0 && f.queue[0].next <= pos {
		f.queued -= len(f.queue[0].entries)
		f.queue = f.queue[1:]
	}
	if len(f.queue) > 0 {
		if f.queue[0].from <= pos {
			batches, f.queue, f.queued = f.queue, nil, 0
			return batches, 0
		}
		return nil, f.queue[0].from
	}
	f.queue = nil
	if f.committed > pos {
		return nil, f.committed
	}
	if !f.on && !f.stopped && f.committed >= 0 {
		f.on, f.end = true, f.committed
	}
	return nil, 0
}

// position returns the read model's stored position as the feed knows it (-1
// before the claim).
func (f *Feed) position() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed
}
