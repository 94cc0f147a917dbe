package projector

import "sync"

// fxFeed hands a partition's committed batches from its read-model worker to its
// effect dispatcher, in process: the events were read from Kafka and decrypted once,
// for the read model, and the effects run on the same entries.
//
// The feed is bounded and never makes the read model wait: a batch that finds the
// queue full is not queued, the feed turns off, and the dispatcher reads the events
// it missed from the log instead — once for all of the partition's effects — until
// it has caught up with the read model, when the feed turns on again. A mail server
// that is down thus holds back the effects, never the read model, and memory stays
// bounded by the queue.
type fxFeed struct {
	mu        sync.Mutex
	committed int64     // the read model's stored position; -1 until its worker claimed the partition
	on        bool      // batches are queued, contiguous from end's value when it turned on
	end       int64     // when on: where the next batch must start to be queued
	queue     []fxBatch // committed batches, contiguous, not yet taken
	queued    int       // entries in queue
	capacity  int       // the most entries queued
	wake      chan struct{}
}

// fxBatch is a committed batch: its entries and the positions before and after it.
type fxBatch struct {
	from, next int64
	entries    []entry
}

func newFxFeed(capacity int) *fxFeed {
	return &fxFeed{committed: -1, capacity: capacity, wake: make(chan struct{}, 1)}
}

func (f *fxFeed) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// claimed records the read model's stored position after a claim: what lies below
// it is committed, and nothing is queued yet.
func (f *fxFeed) claimed(next int64) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.committed, f.on, f.queue, f.queued = next, false, nil, 0
	f.mu.Unlock()
	f.signal()
}

// publish records a committed batch that moved the stored position from from to
// next. Its entries are queued when the feed is on, the batch continues the queue,
// and there is room; otherwise the feed turns off and the dispatcher reads the log.
// No entries (a position that moved without a batch of this worker's) turn it off.
func (f *fxFeed) publish(from, next int64, entries []entry) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.committed = max(f.committed, next)
	if f.on {
		if len(entries) > 0 && from == f.end && f.queued+len(entries) <= f.capacity {
			f.queue = append(f.queue, fxBatch{from: from, next: next, entries: entries})
			f.queued += len(entries)
			f.end = next
		} else {
			f.on = false
		}
	}
	f.mu.Unlock()
	f.signal()
}

// take returns the work for a dispatcher whose effects have run everything below
// pos: the queued batches, when they continue from pos; otherwise the position up to
// which it must read the log itself (the start of the queue, or the read model's
// stored position). It returns neither when nothing is committed beyond pos, and
// then turns the feed on, if it was off: the dispatcher has caught up.
func (f *fxFeed) take(pos int64) (batches []fxBatch, readUpTo int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
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
	if !f.on && f.committed >= 0 {
		f.on, f.end = true, f.committed
	}
	return nil, 0
}

// position returns the read model's stored position as the feed knows it (-1
// before the claim).
func (f *fxFeed) position() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed
}
