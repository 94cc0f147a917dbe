package sideeffects

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Marking runs done one by one, as each finishes, costs no round trip each: the
// ledger gathers the marks and releases of all its callers into pipelined flushes,
// as a database gathers commits. A flush goes out as soon as a mark arrives, unless
// markFlushesOnTheWire flushes are out already; marks arriving meanwhile go
// together in the next one. A mark thus waits about one round trip, with no timer,
// and under load a flush carries many marks.

// Flush limits.
const (
	markFlushMax         = 512              // the most marks in one pipelined flush
	markFlushesOnTheWire = 2                // flushes out at once: while one waits for Redis, the next gathers and goes
	markFlushTimeout     = 10 * time.Second // how long one flush may take before its marks fail (and are retried by their callers)
)

// pendingMark is one caller's mark or release, waiting for its flush.
type pendingMark struct {
	res     Reservation
	release bool
	marked  bool
	err     error
	settled chan struct{} // closed once Redis answered, or the flush failed
}

// markQueue holds the marks waiting for a flush. While it is not empty, up to
// markFlushesOnTheWire goroutines flush it; each ends when it finds the queue
// empty, so an idle ledger runs none.
type markQueue struct {
	mu       sync.Mutex
	pending  []*pendingMark
	flushing int // goroutines flushing
}

// MarkDone marks r's key done — compare-and-set on r's token, kept for the
// retention — in the next pipelined flush, shared with every other caller's marks,
// and returns once Redis answered. marked is false when r's lease had expired and
// another holder took the key: the caller must not believe it alone ran the effect.
// A key whose lease expired and that nobody took is marked: this run was the only one.
// Marking a key the caller already marked (a retry after a lost answer) reports it
// marked. When ctx ends first, MarkDone returns ctx's error; the mark may still be
// made.
func (l *Ledger) MarkDone(ctx context.Context, r Reservation) (marked bool, err error) {
	return l.settleOne(ctx, r, false)
}

// Release gives r's key up (compare-and-set on r's token) in the next pipelined
// flush, so that the effect may run again: for a run that failed and parks.
func (l *Ledger) Release(ctx context.Context, r Reservation) error {
	_, err := l.settleOne(ctx, r, true)
	return err
}

func (l *Ledger) settleOne(ctx context.Context, r Reservation, release bool) (bool, error) {
	m := &pendingMark{res: r, release: release, settled: make(chan struct{})}
	q := &l.marks
	q.mu.Lock()
	q.pending = append(q.pending, m)
	if q.flushing < markFlushesOnTheWire {
		q.flushing++
		go l.flushMarks(context.WithoutCancel(ctx))
	}
	q.mu.Unlock()
	select {
	case <-m.settled:
		return m.marked, m.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// flushMarks sends the queued marks, a flush at a time, until none is left. ctx
// carries the first caller's values, never its end.
func (l *Ledger) flushMarks(ctx context.Context) {
	q := &l.marks
	for {
		q.mu.Lock()
		n := min(len(q.pending), markFlushMax)
		if n == 0 {
			q.flushing--
			q.pending = nil
			q.mu.Unlock()
			return
		}
		batch := q.pending[:n:n]
		q.pending = q.pending[n:]
		q.mu.Unlock()
		l.flush(ctx, batch)
	}
}

// flush sends one pipeline of marks and releases and tells each caller its answer.
// It ends with no caller: one caller stopping must not fail the marks of others that
// share the flush.
func (l *Ledger) flush(ctx context.Context, batch []*pendingMark) {
	ctx, cancel := context.WithTimeout(ctx, markFlushTimeout)
	defer cancel()
	now := time.Now().Unix()
	cmds, err := l.runScripts(ctx, func(run scriptRunner) []*redis.Cmd {
		cmds := make([]*redis.Cmd, len(batch))
		for i, m := range batch {
			if m.release {
				cmds[i] = l.queueRelease(run, m.res)
			} else {
				cmds[i] = l.queueMark(run, m.res, now)
			}
		}
		return cmds
	})
	for i, m := range batch {
		if err != nil {
			m.err = fmt.Errorf("sideeffects: ledger mark: %w", err)
		} else if n, cerr := cmds[i].Int(); cerr != nil {
			m.err = fmt.Errorf("sideeffects: ledger mark: %w", cerr)
		} else {
			m.marked = n == 1
		}
		close(m.settled)
	}
}
