// Package effectfire is how the effect engine (internal/effects) runs an effect's
// function without package sideeffects exporting it: users define effects
// (sideeffects.Define, sideeffects.On) and only the runtime fires them.
//
// Package sideeffects hands its fire function over at init (Set); internal/effects
// calls it through Fire. Neither names the other here, so this package imports
// neither: the types are checked once, at the first Fire.
package effectfire

import (
	"context"
	"fmt"

	"github.com/projector/projector/pkg/events"
)

// fire is sideeffects' func(context.Context, *Effect, Run, events.Decoded) error.
var fire any

// Set hands over the function that runs an effect's function for a decoded event.
// Package sideeffects calls it at init, once.
func Set[E, R any](f func(ctx context.Context, e *E, run R, d events.Decoded) error) { fire = f }

// Fire runs effect e's function for d, with run telling it about this run.
func Fire[E, R any](ctx context.Context, e *E, run R, d events.Decoded) error {
	f, ok := fire.(func(context.Context, *E, R, events.Decoded) error)
	if !ok {
		panic(fmt.Sprintf("effectfire: no fire function for %T and %T: is package sideeffects linked?", e, run))
	}
	return f(ctx, e, run, d)
}
