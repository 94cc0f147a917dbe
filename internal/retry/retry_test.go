package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/projector/projector/internal/retry"
)

func TestWaitDoublesUpToMax(t *testing.T) {
	t.Parallel()
	p := retry.Policy{Min: 100 * time.Millisecond, Max: time.Second, NoJitter: true}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 50: time.Second} {
		if got := p.Wait(attempt); got != want {
			t.Errorf("Wait(%d) = %v, want %v", attempt, got, want)
		}
	}
	j := retry.Policy{Min: 100 * time.Millisecond, Max: time.Second}
	for range 100 {
		if got := j.Wait(1); got < 100*time.Millisecond || got > 150*time.Millisecond {
			t.Fatalf("jittered Wait(1) = %v, want within [100ms, 150ms]", got)
		}
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	p := retry.Policy{Min: time.Millisecond, Max: time.Millisecond}
	permanent := errors.New("permanent")
	transient := errors.New("transient")
	tests := []struct {
		name      string
		errs      []error
		attempts  int
		want      error
		wantCalls int
	}{
		{"succeeds at once", nil, 0, nil, 1},
		{"recovers", []error{transient, transient}, 0, nil, 3},
		{"permanent returns at once", []error{transient, permanent}, 0, permanent, 2},
		{"bounded attempts", []error{transient, transient, transient}, 2, transient, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			calls, failed, recovered := 0, 0, 0
			err := p.Do(context.Background(), retry.Hooks{
				Retryable: func(err error) bool { return !errors.Is(err, permanent) },
				Failed:    func(int, error) { failed++ },
				Recovered: func(int) { recovered++ },
				Attempts:  tt.attempts,
			}, func(context.Context) error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if !errors.Is(err, tt.want) || calls != tt.wantCalls {
				t.Fatalf("err %v after %d calls; want %v after %d", err, calls, tt.want, tt.wantCalls)
			}
			if tt.want == nil && tt.wantCalls > 1 && recovered != 1 {
				t.Fatalf("Recovered called %d times, want 1", recovered)
			}
		})
	}
}

func TestDoStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	p := retry.Policy{Min: time.Hour, Max: time.Hour}
	err := p.Do(ctx, retry.Hooks{Failed: func(int, error) { cancel() }}, func(context.Context) error { return errors.New("down") })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}
