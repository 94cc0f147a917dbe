// Package poll holds the loop of everything in the runtime that looks at something
// every so often — blue/green activation, the snapshot policy, the catch-up progress
// log, a bounded run's end, start-up's watch, the memory watch — so that each says
// only what it does at each look.
package poll

import (
	"context"
	"time"
)

// Every calls fn every interval, the first time one interval from now, until fn
// returns true (Every then returns true) or ctx ends (Every returns false).
func Every(ctx context.Context, every time.Duration, fn func() (stop bool)) bool {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if fn() {
			return true
		}
	}
}
