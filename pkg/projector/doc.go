// Package projector is the runtime: group membership, one worker per partition,
// batching, catch-up then live, parking and status.
//
// Not built yet: see issue 4 ("The projector runtime").
package projector
