// Package roundtrips counts a Redis client's round trips, for the tests and the
// benchmark that hold the ledger (pkg/sideeffects) to its budget: a batch's
// reservations in one round trip, marks flushed together. It observes the client
// from outside, as any user of go-redis could (a redis.Hook), so the ledger keeps
// no counter for them.
package roundtrips

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Counter is a redis.Hook counting the round trips made through the client it is
// added to (Client.AddHook): a command or a pipeline is one. A new connection's
// handshake (HELLO, AUTH, SELECT, CLIENT …), which go-redis sends through the same
// hooks, is not counted: it is the client's, not its caller's.
type Counter struct{ n atomic.Int64 }

// On returns a Counter added to c.
func On(c *redis.Client) *Counter {
	var rt Counter
	c.AddHook(&rt)
	return &rt
}

// Load returns the round trips counted so far.
func (rt *Counter) Load() int64 { return rt.n.Load() }

// DialHook implements redis.Hook.
func (rt *Counter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (rt *Counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			rt.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (rt *Counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if !handshake(c) {
				rt.n.Add(1)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// handshake reports whether cmd is one go-redis sends to set a new connection up.
func handshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "select", "client", "readonly":
		return true
	}
	return false
}

var _ redis.Hook = (*Counter)(nil)
