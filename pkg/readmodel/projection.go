package readmodel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"

	"github.com/projector/projector/pkg/events"
)

// HandlerFunc applies one decoded event: it queues statements on w. v is the event's
// data decoded to the registered Go type T, upcast to the current schema version.
type HandlerFunc[T any] func(ctx context.Context, w *Writer, e events.Event, v T) error

// Projection is a read model: a name, a version, its schema migrations and a typed
// handler per event type. Build it once at start; it is read-only afterwards.
type Projection struct {
	schema     string // overrides name_vN (InSchema)
	name       string
	version    int
	registry   *events.Registry
	migrations []string
	handlers   map[string]func(ctx context.Context, w *Writer, d events.Decoded) error
	loads      map[string]func(w *Writer, d events.Decoded) // the keys a handler declared (Loads)
	tables     []string                                     // declared with NewTable
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// New returns a projection. name is lowercase letters, digits and underscores
// (it names the PostgreSQL schema name_vN); version is at least 1; the registry
// decodes the events the handlers take.
func New(name string, version int, registry *events.Registry) (*Projection, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("readmodel: projection name %q: want lowercase letters, digits and underscores, starting with a letter, at most 40", name)
	}
	if version < 1 {
		return nil, fmt.Errorf("readmodel: projection %s version %d: must be at least 1", name, version)
	}
	if registry == nil {
		return nil, fmt.Errorf("readmodel: projection %s: registry is nil", name)
	}
	return &Projection{name: name, version: version, registry: registry,
		handlers: map[string]func(context.Context, *Writer, events.Decoded) error{},
		loads:    map[string]func(*Writer, events.Decoded){}}, nil
}

// Name returns the projection's name.
func (p *Projection) Name() string { return p.name }

// Version returns the projection's version.
func (p *Projection) Version() int { return p.version }

// Schema returns the PostgreSQL schema holding this version's tables: name_vN.
func (p *Projection) Schema() string {
	if p.schema != "" {
		return p.schema
	}
	return p.name + "_v" + strconv.Itoa(p.version)
}

// InSchema returns a copy of the projection whose tables live in schema instead of
// name_vN: the same handlers and migrations (and schema hash), built elsewhere — for
// a point-in-time replay beside the live read model.
func (p *Projection) InSchema(schema string) *Projection {
	c := *p
	c.schema = schema
	return &c
}

// Registry returns the registry the projection decodes with.
func (p *Projection) Registry() *events.Registry { return p.registry }

// Migrate appends schema migrations, SQL run in order, each once, inside the
// projection's schema (unqualified names land there). Append new steps; never edit
// an applied one: the framework refuses to start when an applied step's text changed.
func (p *Projection) Migrate(steps ...string) { p.migrations = append(p.migrations, steps...) }

// Migrations returns the migration steps in order.
func (p *Projection) Migrations() []string { return append([]string(nil), p.migrations...) }

// SchemaHash identifies the projection's schema: a hash of its name, version and
// migration steps. Snapshots carry it so a restore into a different schema is refused.
func (p *Projection) SchemaHash() string {
	h := sha256.New()
	_, _ = fmt.Fprintf(h, "%s\x00%d", p.name, p.version)
	for _, m := range p.migrations {
		_, _ = fmt.Fprintf(h, "\x00%s", m)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Handle registers fn for the event type registered for T in the projection's
// registry, with the rows it touches (Loads), which the runtime loads for a whole
// batch before its handlers run. It panics when T is not registered or already has
// a handler: both are programming errors found at start.
func Handle[T any](p *Projection, fn HandlerFunc[T], loads ...Load[T]) {
	name, ok := events.TypeName[T](p.registry)
	if !ok {
		panic(fmt.Sprintf("readmodel: %s: Go type %v is not registered as an event type", p.name, reflect.TypeFor[T]()))
	}
	if _, dup := p.handlers[name]; dup {
		panic(fmt.Sprintf("readmodel: %s: two handlers for %s", p.name, name))
	}
	p.handlers[name] = func(ctx context.Context, w *Writer, d events.Decoded) error {
		v, ok := d.Value.(T)
		if !ok {
			return fmt.Errorf("readmodel: %s decoded as %T, handler takes %v", name, d.Value, reflect.TypeFor[T]())
		}
		return fn(ctx, w, d.Event, v)
	}
	if len(loads) > 0 {
		p.loads[name] = func(w *Writer, d events.Decoded) {
			if v, ok := d.Value.(T); ok {
				for _, l := range loads {
					l.want(w, v)
				}
			}
		}
	}
}

// Handles reports whether the projection has a handler for the event type.
func (p *Projection) Handles(eventType string) bool {
	_, ok := p.handlers[eventType]
	return ok
}

// ErrNoHandler is returned by Apply for an event type the projection does not handle.
var ErrNoHandler = errors.New("no handler for event type")

// Apply calls the handler for a decoded event.
func (p *Projection) Apply(ctx context.Context, w *Writer, d events.Decoded) error {
	h, ok := p.handlers[d.Type]
	if !ok {
		return fmt.Errorf("readmodel: %s: %w %s", p.name, ErrNoHandler, d.Type)
	}
	w.inFn = true
	defer func() { w.inFn = false }()
	return h(ctx, w, d)
}

// Tables returns the names of the tables declared with NewTable, in order.
func (p *Projection) Tables() []string { return append([]string(nil), p.tables...) }
