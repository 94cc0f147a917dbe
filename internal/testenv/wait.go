package testenv

import (
	"testing"
	"time"
)

// WaitPollInterval is how often WaitFor checks its condition.
const WaitPollInterval = 50 * time.Millisecond

// WaitFor checks cond every WaitPollInterval until it holds, and fails the test,
// naming what it waited for, when timeout passes first. Tests wait for a condition
// with it instead of sleeping for a guessed time.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(WaitPollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
