package sideeffects

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"

	"github.com/projector/projector/internal/effectfire"
	"github.com/projector/projector/pkg/events"
)

// Run is what an effect's function is told about this run.
type Run struct {
	Effect  string // the effect's name
	Key     string // the idempotency key: the same for every run of this effect on this event
	Attempt int    // 1 for the first run in this process, 2 for its first retry, …

	// ReadModel reads the projection's read model, read-only: as of the event's
	// commit or later (see ReadModel). Nil where a run has no read model.
	ReadModel *ReadModel
}

// Effect is a named reaction to event types. Declare it once at start with Define
// and On; the runtime (package projector) runs it.
type Effect struct {
	name     string
	registry *events.Registry
	fns      map[string]func(ctx context.Context, run Run, d events.Decoded) error
	takes    map[string]reflect.Type // the Go type each event type's function takes
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)

// Define returns an effect named name (lowercase letters, digits, underscores): the
// name is part of every idempotency key, so renaming an effect makes it fire again.
func Define(name string, registry *events.Registry) (*Effect, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("sideeffects: effect name %q: want lowercase letters, digits and underscores, starting with a letter", name)
	}
	if registry == nil {
		return nil, fmt.Errorf("sideeffects: effect %s: registry is nil", name)
	}
	return &Effect{name: name, registry: registry, fns: map[string]func(context.Context, Run, events.Decoded) error{},
		takes: map[string]reflect.Type{}}, nil
}

// On makes the effect react to the event type registered for T with fn. It panics
// when T is not registered or already has a function: programming errors found at start.
func On[T any](e *Effect, fn func(ctx context.Context, run Run, ev events.Event, v T) error) {
	name, ok := events.TypeName[T](e.registry)
	if !ok {
		panic(fmt.Sprintf("sideeffects: %s: Go type %v is not a registered event type", e.name, reflect.TypeFor[T]()))
	}
	if _, dup := e.fns[name]; dup {
		panic(fmt.Sprintf("sideeffects: %s reacts to %s twice", e.name, name))
	}
	e.takes[name] = reflect.TypeFor[T]()
	e.fns[name] = func(ctx context.Context, run Run, d events.Decoded) error {
		v, ok := d.Value.(T)
		if !ok {
			return Permanent(fmt.Errorf("sideeffects: %s decoded as %T", name, d.Value))
		}
		return fn(ctx, run, d.Event, v)
	}
}

// Name returns the effect's name.
func (e *Effect) Name() string { return e.name }

// Registry returns the registry the effect decodes with.
func (e *Effect) Registry() *events.Registry { return e.registry }

// Types returns the event types the effect reacts to, sorted.
func (e *Effect) Types() []string {
	out := make([]string, 0, len(e.fns))
	for t := range e.fns {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// ReactsTo reports whether the effect reacts to the event type.
func (e *Effect) ReactsTo(eventType string) bool {
	_, ok := e.fns[eventType]
	return ok
}

// Accepts reports whether d, decoded by another registry (a projection's), is what
// the effect's function for its type takes as it is: a value of the same Go type, at
// the schema version the effect's registry decodes that type to. The runtime then
// hands d over instead of decoding the event again.
func (e *Effect) Accepts(d events.Decoded) bool {
	t, ok := e.takes[d.Type]
	if !ok || d.Value == nil || reflect.TypeOf(d.Value) != t {
		return false
	}
	v, ok := e.registry.SchemaVersion(d.Type)
	return ok && v == d.SchemaVersion
}

// The runtime (internal/effects) runs an effect's function through package
// internal/effectfire: users define effects, only the runtime fires them.
func init() { effectfire.Set(fire) }

// fire runs the effect's function for a decoded event.
func fire(ctx context.Context, e *Effect, run Run, d events.Decoded) error {
	fn, ok := e.fns[d.Type]
	if !ok {
		return Permanent(fmt.Errorf("sideeffects: %s does not react to %s", e.name, d.Type))
	}
	return fn(ctx, run, d)
}

// Key returns the idempotency key of an effect's run on an event: a stable hash of
// the effect's name and the event's id, 32 hex digits.
func Key(effect, eventID string) string {
	h := sha256.Sum256([]byte(effect + "\x00" + eventID))
	return hex.EncodeToString(h[:16])
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks an effect's error as permanent: the effect parks at once instead
// of being retried. Unmarked errors are retried with backoff, up to the runtime's
// attempt limit, and then park.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool { return errors.As(err, new(permanentError)) }
