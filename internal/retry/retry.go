// Package retry is the framework's one retry policy: jittered exponential backoff
// between a first and a longest wait, retrying while the caller says an error is
// worth it and its context lives. Every retry loop of the module uses it, so that
// what is retried, how long it waits and what the operator sees meanwhile is
// decided in one place (docs/operations.md, "What is retried").
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is jittered exponential backoff: the first wait is Min, each next one
// doubles, up to Max; each wait adds a random jitter of up to half of it (none with
// NoJitter), so that many workers failing together do not retry in step.
type Policy struct {
	Min, Max time.Duration
	NoJitter bool
}

// Wait returns the wait after the attempt-th failure in a row (1 for the first).
func (p Policy) Wait(attempt int) time.Duration {
	d := max(p.Min, time.Millisecond)
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, max(p.Max, p.Min))
	if p.NoJitter {
		return d
	}
	return d + time.Duration(rand.Int64N(int64(d)/2+1))
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Hooks say what a retry loop does besides waiting; each may be nil.
type Hooks struct {
	// Retryable reports whether an error is worth another attempt (default: every
	// error is). A permanent one is returned at once.
	Retryable func(error) bool
	// Failed is told of each failure that will be retried, before the wait: the
	// place to count it, log it (not every time) and show it on a status page.
	Failed func(attempt int, err error)
	// Recovered is told when an attempt succeeds after failures: the place to
	// clear what Failed showed.
	Recovered func(attempts int)
	// Attempts bounds the attempts (0: no bound); the last failure is returned.
	Attempts int
}

// Do runs fn until it succeeds, fails with an error Retryable refuses, runs out of
// Attempts, or ctx ends (ctx's error), waiting by p between attempts.
func (p Policy) Do(ctx context.Context, h Hooks, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			if attempt > 1 && h.Recovered != nil {
				h.Recovered(attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if (h.Retryable != nil && !h.Retryable(err)) || (h.Attempts > 0 && attempt >= h.Attempts) {
			return err
		}
		if h.Failed != nil {
			h.Failed(attempt, err)
		}
		if err := Sleep(ctx, p.Wait(attempt)); err != nil {
			return err
		}
	}
}
