package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/projector/projector/internal/poll"
	"github.com/projector/projector/internal/statusview"
	"github.com/projector/projector/pkg/projector"
)

// How run retries a server it cannot reach at start: a bound on each attempt, and
// the pause between two (each failed attempt logs a warning).
const (
	reachAttemptTimeout = 5 * time.Second
	reachRetryEvery     = 3 * time.Second
)

// startup is what run waits for before it consumes: the read model's database, the
// key store's, then (the runner's part) the topic on Kafka. Until the API takes
// over it answers every HTTP request, /healthz included, with 503 and what it waits
// for. With a timeout (--startup-timeout) it gives up when still waiting then.
type startup struct {
	*statusview.Gate // what HTTP answers: 503 and what start waits for, then the API
	log              *zap.Logger
	timeout          time.Duration // 0: wait forever
	began            time.Time
}

func newStartup(log *zap.Logger, timeout time.Duration) *startup {
	return &startup{Gate: statusview.NewGate(), log: log, timeout: timeout, began: time.Now()}
}

// expired reports whether the startup timeout has passed.
func (s *startup) expired() bool { return s.timeout > 0 && time.Since(s.began) >= s.timeout }

// giveUp is the error of a start that waited longer than --startup-timeout.
func (s *startup) giveUp(why string) error {
	return fmt.Errorf("gave up after --startup-timeout %v (PROJECTOR_STARTUP_TIMEOUT): still waiting for %s", s.timeout, why)
}

// reach calls ping until it succeeds. Each failure logs a warning naming what and the
// error, and /healthz says the same; past the startup timeout the failure is returned.
func (s *startup) reach(ctx context.Context, what string, ping func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, reachAttemptTimeout)
		err := ping(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				s.log.Info("reached "+what, zap.Int("attempts", attempt))
			}
			s.Wait("")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		why := what + ": " + err.Error()
		s.Wait(why)
		if s.expired() {
			return s.giveUp(why)
		}
		s.log.Warn("waiting for "+what+": unreachable; retrying", zap.Int("attempt", attempt),
			zap.String("every", reachRetryEvery.String()), zap.Error(err))
		pause := reachRetryEvery
		if s.timeout > 0 { // the last attempt comes at the timeout, not after it
			pause = min(pause, max(0, s.timeout-time.Since(s.began)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// watch cancels the run, with the reason as its cause, when the runner still waits
// for Kafka past the startup timeout. It returns once the runner has joined its
// group or ctx ends. Without a timeout it returns at once.
func (s *startup) watch(ctx context.Context, r *projector.Runner, cancel context.CancelCauseFunc) {
	if s.timeout <= 0 {
		return
	}
	poll.Every(ctx, 200*time.Millisecond, func() bool {
		st := r.Status()
		if st.Joined {
			return true
		}
		if st.Waiting != "" && s.expired() {
			cancel(s.giveUp(st.Waiting))
			return true
		}
		return false
	})
}

// gaveUp returns why ctx was cancelled when watch gave up on start, else nil.
func gaveUp(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}
