package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"
)

// Upcaster lifts an event's data from one schema version to the next.
type Upcaster func(data json.RawMessage) (json.RawMessage, error)

// TypeOption configures a registered event type.
type TypeOption func(*typeInfo)

// WithSchemaVersion sets the type's current schema version (default 1).
func WithSchemaVersion(v int) TypeOption {
	return func(ti *typeInfo) { ti.version = v }
}

// WithUpcaster registers fn to lift data at schema version from to version from+1.
// Decoding an older event applies the chain of upcasters up to the current version.
func WithUpcaster(from int, fn Upcaster) TypeOption {
	return func(ti *typeInfo) { ti.upcasters[from] = fn }
}

// WithPersonalData marks the data fields (by JSON name) that hold a person's data:
// they are encrypted on publish under the data key of the subject named by the JSON
// field subjectField (e.g. "user_id"), and redacted on read once that subject is
// forgotten (package shred). Each must be a string field of the registered Go type,
// so the redaction marker fits; the subject field itself stays plain.
func WithPersonalData(subjectField string, fields ...string) TypeOption {
	return func(ti *typeInfo) {
		ti.personal = &PersonalData{SubjectField: subjectField, Fields: append([]string(nil), fields...)}
	}
}

// PersonalData says which data fields of an event type are personal, and which field
// names their subject.
type PersonalData struct {
	SubjectField string
	Fields       []string
}

type typeInfo struct {
	name      string
	goType    reflect.Type
	version   int
	upcasters map[int]Upcaster
	decode    func(json.RawMessage) (any, error)
	personal  *PersonalData
}

// Registry maps event type names to Go types and their schema versions. Build it once
// at start with Register; it is safe for concurrent reads after that.
type Registry struct {
	byName map[string]*typeInfo
	byType map[reflect.Type]*typeInfo
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byName: map[string]*typeInfo{}, byType: map[reflect.Type]*typeInfo{}}
}

// Register adds event type name with data of Go type T. It panics on a duplicate name
// or Go type, or an upcaster chain with a hole: all are programming errors found at start.
func Register[T any](r *Registry, name string, opts ...TypeOption) {
	gt := reflect.TypeFor[T]()
	ti := &typeInfo{name: name, goType: gt, version: 1, upcasters: map[int]Upcaster{}}
	for _, o := range opts {
		o(ti)
	}
	if name == "" {
		panic("events: Register with an empty type name")
	}
	if _, dup := r.byName[name]; dup {
		panic(fmt.Sprintf("events: type %q registered twice", name))
	}
	if prev, dup := r.byType[gt]; dup {
		panic(fmt.Sprintf("events: Go type %v registered as both %q and %q", gt, prev.name, name))
	}
	if ti.version < 1 {
		panic(fmt.Sprintf("events: type %q schema version %d < 1", name, ti.version))
	}
	for from := range ti.upcasters {
		if from < 1 || from >= ti.version {
			panic(fmt.Sprintf("events: type %q has an upcaster from version %d, outside 1..%d", name, from, ti.version-1))
		}
	}
	if ti.personal != nil {
		checkPersonal(name, gt, ti.personal)
	}
	ti.decode = func(data json.RawMessage) (any, error) {
		var v T
		if len(data) == 0 {
			// Data may be absent only for a type with nothing to carry.
			if gt.Kind() != reflect.Struct || gt.NumField() != 0 {
				return nil, ErrNoData
			}
			return v, nil
		}
		if err := decodeJSON(data, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
	r.byName[name] = ti
	r.byType[gt] = ti
}

// checkPersonal panics unless the personal fields and the subject field are string
// fields of gt, by JSON name, and the subject field is not itself personal.
func checkPersonal(name string, gt reflect.Type, pd *PersonalData) {
	if len(pd.Fields) == 0 || pd.SubjectField == "" {
		panic(fmt.Sprintf("events: type %q: WithPersonalData needs a subject field and at least one personal field", name))
	}
	strs := map[string]bool{}
	if gt.Kind() == reflect.Struct {
		for i := range gt.NumField() {
			f := gt.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" {
				tag = f.Name
			}
			if f.IsExported() && tag != "-" && f.Type.Kind() == reflect.String {
				strs[tag] = true
			}
		}
	}
	for _, f := range append([]string{pd.SubjectField}, pd.Fields...) {
		if !strs[f] {
			panic(fmt.Sprintf("events: type %q: personal data field %q is not a string field of %v", name, f, gt))
		}
	}
	if slices.Contains(pd.Fields, pd.SubjectField) {
		panic(fmt.Sprintf("events: type %q: the subject field %q cannot be personal: it finds the key", name, pd.SubjectField))
	}
}

// PersonalData returns the personal fields of a registered type, if it has any.
func (r *Registry) PersonalData(name string) (PersonalData, bool) {
	ti, ok := r.byName[name]
	if !ok || ti.personal == nil {
		return PersonalData{}, false
	}
	return *ti.personal, true
}

// HasPersonalData reports whether any registered type has personal fields.
func (r *Registry) HasPersonalData() bool {
	for _, ti := range r.byName {
		if ti.personal != nil {
			return true
		}
	}
	return false
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string {
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Known reports whether name is registered.
func (r *Registry) Known(name string) bool {
	_, ok := r.byName[name]
	return ok
}

// SchemaVersion returns the current schema version of a registered type.
func (r *Registry) SchemaVersion(name string) (int, bool) {
	ti, ok := r.byName[name]
	if !ok {
		return 0, false
	}
	return ti.version, true
}

// Decoded is an event with its data decoded to the registered Go type, at the
// current schema version.
type Decoded struct {
	Event
	Value any // a value of the registered Go type T (not a pointer)
}

// Decode checks the event's type and schema version, upcasts old data to the current
// version and decodes it to the registered Go type. The error is a *ValidationError
// wrapping ErrUnknownType, ErrSchemaTooNew, ErrNoUpcaster, ErrInvalidJSON, … .
func (r *Registry) Decode(e Event) (Decoded, error) {
	ti, ok := r.byName[e.Type]
	if !ok {
		return Decoded{}, &ValidationError{Field: "type", Err: fmt.Errorf("%w: %q", ErrUnknownType, e.Type)}
	}
	if !isJSON(e.ContentType()) {
		return Decoded{}, &ValidationError{Field: "datacontenttype", Err: fmt.Errorf("%w: %q", ErrUnsupportedMedia, e.ContentType())}
	}
	// The data is checked as it is decoded, in one pass; only what must read it
	// before (the encryption refusal, an upcaster) checks it first.
	if e.Encrypted() || e.Schema() < ti.version {
		if err := CheckJSON(e.Data); err != nil {
			return Decoded{}, &ValidationError{Field: "data", Err: err}
		}
	}
	if e.Encrypted() {
		return Decoded{}, &ValidationError{Field: "encryption", Err: fmt.Errorf("%w: fields %v under key %s", ErrEncrypted, e.EncryptedFields, e.KeyID)}
	}
	data, err := ti.upcast(e.Schema(), e.Data)
	if err != nil {
		return Decoded{}, err
	}
	v, err := ti.decode(data)
	if err != nil {
		if errors.Is(err, ErrInvalidJSON) {
			err = fmt.Errorf("%s as %v: %w", e.Type, ti.goType, err)
		}
		return Decoded{}, &ValidationError{Field: "data", Err: err}
	}
	out := e
	out.Data = data
	out.SchemaVersion = ti.version
	return Decoded{Event: out, Value: v}, nil
}

func (ti *typeInfo) upcast(from int, data json.RawMessage) (json.RawMessage, error) {
	if from > ti.version {
		return nil, &ValidationError{Field: "schemaversion", Err: fmt.Errorf("%w: %s v%d, this service knows up to v%d", ErrSchemaTooNew, ti.name, from, ti.version)}
	}
	for v := from; v < ti.version; v++ {
		up, ok := ti.upcasters[v]
		if !ok {
			return nil, &ValidationError{Field: "schemaversion", Err: fmt.Errorf("%w: %s v%d to v%d", ErrNoUpcaster, ti.name, v, v+1)}
		}
		next, err := up(data)
		if err != nil {
			return nil, &ValidationError{Field: "data", Err: fmt.Errorf("upcast %s v%d to v%d: %w", ti.name, v, v+1, err)}
		}
		data = next
	}
	return data, nil
}

// As returns the decoded value as T, or false when the event holds another type.
func As[T any](d Decoded) (T, bool) {
	v, ok := d.Value.(T)
	return v, ok
}

// EventOption sets optional attributes of an event built by New.
type EventOption func(*Event)

// WithID sets the event id (default: a fresh UUIDv7).
func WithID(id string) EventOption { return func(e *Event) { e.ID = id } }

// WithTime sets the event time (default: now).
func WithTime(t time.Time) EventOption { return func(e *Event) { e.Time = t } }

// WithSequence sets the aggregate's version after this event.
func WithSequence(n uint64) EventOption { return func(e *Event) { e.Sequence = n } }

// WithCorrelation sets the correlation and causation ids.
func WithCorrelation(correlationID, causationID string) EventOption {
	return func(e *Event) { e.CorrelationID, e.CausationID = correlationID, causationID }
}

// WithTraceParent sets the W3C traceparent.
func WithTraceParent(tp string) EventOption { return func(e *Event) { e.TraceParent = tp } }

// New builds an event from a value of a registered Go type: its type name and current
// schema version come from the registry, the data is v as JSON.
func (r *Registry) New(source, subject string, v any, opts ...EventOption) (Event, error) {
	ti, ok := r.byType[reflect.TypeOf(v)]
	if !ok {
		return Event{}, &ValidationError{Field: "type", Err: fmt.Errorf("%w: Go type %T is not registered", ErrUnknownType, v)}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return Event{}, &ValidationError{Field: "data", Err: fmt.Errorf("%w: %w", ErrInvalidJSON, err)}
	}
	e := Event{
		ID: NewID(), Source: source, Type: ti.name, Subject: subject, Time: time.Now().UTC(),
		DataContentType: ContentTypeJSON, Data: data, SchemaVersion: ti.version,
	}
	for _, o := range opts {
		o(&e)
	}
	return e, e.Validate()
}

// TypeName returns the event type name registered for Go type T.
func TypeName[T any](r *Registry) (string, bool) {
	ti, ok := r.byType[reflect.TypeFor[T]()]
	if !ok {
		return "", false
	}
	return ti.name, true
}
