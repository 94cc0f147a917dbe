package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/pkg/events"
)

type registered struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

func fullEvent() events.Event {
	return events.Event{
		ID: "01890f2e-7b1a-7c3e-9f00-000000000001", Source: "users-api", Type: "UserRegistered",
		Subject: "user-42", Time: time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC),
		DataContentType: "application/json", Data: json.RawMessage(`{"email":"a@example.test","name":"Ada"}`),
		Sequence: 7, SchemaVersion: 2, CorrelationID: "corr-1", CausationID: "cause-1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func TestRoundTripBothContentModes(t *testing.T) {
	t.Parallel()
	want := fullEvent()
	rec, err := events.Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Key) != want.Subject {
		t.Fatalf("key %q, want the subject %q", rec.Key, want.Subject)
	}
	got, err := events.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("binary round trip:\n got %+v\nwant %+v", got, want)
	}

	js, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	structuredRec := events.Record{Key: []byte("user-42"), Value: js,
		Headers: []events.Header{{Key: "content-type", Value: []byte("application/cloudevents+json; charset=utf-8")}}}
	got, err = events.Decode(structuredRec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("structured round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodePlainHeadersFromAnyClient(t *testing.T) {
	t.Parallel()
	// Written by hand as a non-Go producer would: upper-case header names, no
	// specversion, no subject header (the key stands in), numbers as text.
	rec := events.Record{
		Key:   []byte("user-9"),
		Value: []byte(`{"email":"b@example.test"}`),
		Headers: []events.Header{
			{Key: "CE_ID", Value: []byte("e-1")}, {Key: "ce_source", Value: []byte("php-shop")},
			{Key: "ce_type", Value: []byte("UserRegistered")}, {Key: "ce_sequence", Value: []byte("3")},
			{Key: "Content-Type", Value: []byte("application/json")},
		},
	}
	e, err := events.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != "e-1" || e.Source != "php-shop" || e.Subject != "user-9" || e.Sequence != 3 || e.Schema() != 1 {
		t.Fatalf("decoded %+v", e)
	}
}

func TestBadInputNamesTheProblem(t *testing.T) {
	t.Parallel()
	ok := fullEvent()
	with := func(f func(*events.Event)) events.Event { e := ok; f(&e); return e }
	tests := []struct {
		name  string
		event events.Event
		field string
		want  error
	}{
		{"missing id", with(func(e *events.Event) { e.ID = "" }), "id", events.ErrMissingAttribute},
		{"missing source", with(func(e *events.Event) { e.Source = " " }), "source", events.ErrMissingAttribute},
		{"missing type", with(func(e *events.Event) { e.Type = "" }), "type", events.ErrMissingAttribute},
		{"missing subject", with(func(e *events.Event) { e.Subject = "" }), "subject", events.ErrMissingAttribute},
		{"invalid JSON", with(func(e *events.Event) { e.Data = json.RawMessage(`{"email":`) }), "data", events.ErrInvalidJSON},
		{"invalid UTF-8 in data", with(func(e *events.Event) { e.Data = json.RawMessage("{\"name\":\"\xff\"}") }), "data", events.ErrInvalidUTF8},
		{"raw NUL in data", with(func(e *events.Event) { e.Data = json.RawMessage("{\"name\":\"a\x00\"}") }), "data", events.ErrNULCharacter},
		{"escaped NUL in data", with(func(e *events.Event) { e.Data = json.RawMessage(`{"name":"a\u0000"}`) }), "data", events.ErrNULCharacter},
		{"invalid UTF-8 in subject", with(func(e *events.Event) { e.Subject = "u\xfe" }), "subject", events.ErrInvalidUTF8},
		{"NUL in source", with(func(e *events.Event) { e.Source = "a\x00b" }), "source", events.ErrNULCharacter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.Encode(tt.event)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !errors.Is(err, tt.want) {
				t.Fatalf("Encode error = %v, want field %q and %v", err, tt.field, tt.want)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("message %q does not name the field", err)
			}
		})
	}
}

func TestDecodeRejectsBadHeaders(t *testing.T) {
	t.Parallel()
	rec, err := events.Encode(fullEvent())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header, value, field string
	}{
		{"ce_sequence", "-1", "sequence"},
		{"ce_schemaversion", "zero", "schemaversion"},
		{"ce_time", "yesterday", "time"},
		{"ce_specversion", "0.3", "specversion"},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			r := rec
			r.Headers = append([]events.Header{}, rec.Headers...)
			for i := range r.Headers {
				if r.Headers[i].Key == tt.header {
					r.Headers[i].Value = []byte(tt.value)
				}
			}
			_, err := events.Decode(r)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !errors.Is(err, events.ErrInvalidAttribute) {
				t.Fatalf("Decode error = %v, want invalid %s", err, tt.field)
			}
		})
	}
	// Structured mode: garbage bytes are refused before decoding.
	bad := events.Record{Value: []byte("{\"id\":\"\xff\"}"), Headers: []events.Header{{Key: "content-type", Value: []byte(events.ContentTypeStructured)}}}
	if _, err := events.Decode(bad); !errors.Is(err, events.ErrInvalidUTF8) {
		t.Fatalf("structured invalid UTF-8: %v", err)
	}
}

type registeredV1 struct {
	Email    string `json:"email"`
	FullName string `json:"full_name"`
}

func newRegistry(t *testing.T) *events.Registry {
	t.Helper()
	r := events.NewRegistry()
	// v1 had full_name; v2 renamed it to name.
	events.Register[registered](r, "UserRegistered", events.WithSchemaVersion(2),
		events.WithUpcaster(1, func(data json.RawMessage) (json.RawMessage, error) {
			var v1 registeredV1
			if err := json.Unmarshal(data, &v1); err != nil {
				return nil, err
			}
			return json.Marshal(registered{Email: v1.Email, Name: v1.FullName})
		}))
	return r
}

func TestRegistryDecodesTypedAndUpcasts(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	e, err := r.New("users-api", "user-1", registered{Email: "a@example.test", Name: "Ada"}, events.WithSequence(1))
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != "UserRegistered" || e.SchemaVersion != 2 || e.ID == "" {
		t.Fatalf("New gave %+v", e)
	}
	d, err := r.Decode(e)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := events.As[registered](d); !ok || v.Name != "Ada" {
		t.Fatalf("decoded %#v", d.Value)
	}

	old := e
	old.SchemaVersion = 1
	old.Data = json.RawMessage(`{"email":"b@example.test","full_name":"Bob"}`)
	d, err = r.Decode(old)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := events.As[registered](d); v.Name != "Bob" || d.SchemaVersion != 2 {
		t.Fatalf("upcast gave %#v at v%d", d.Value, d.SchemaVersion)
	}
}

func TestRegistryRefusals(t *testing.T) {
	t.Parallel()
	r := newRegistry(t)
	base := fullEvent()
	tests := []struct {
		name  string
		mod   func(*events.Event)
		field string
		want  error
	}{
		{"unknown type", func(e *events.Event) { e.Type = "UserTeleported" }, "type", events.ErrUnknownType},
		{"too-new schema", func(e *events.Event) { e.SchemaVersion = 3 }, "schemaversion", events.ErrSchemaTooNew},
		{"wrong JSON shape", func(e *events.Event) { e.Data = json.RawMessage(`{"email":42}`) }, "data", events.ErrInvalidJSON},
		{"NUL", func(e *events.Event) { e.Data = json.RawMessage(`{"name":"\u0000"}`) }, "data", events.ErrNULCharacter},
		{"not JSON media", func(e *events.Event) { e.DataContentType = "application/avro" }, "datacontenttype", events.ErrUnsupportedMedia},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			tt.mod(&e)
			_, err := r.Decode(e)
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !errors.Is(err, tt.want) {
				t.Fatalf("Decode error = %v, want field %q and %v", err, tt.field, tt.want)
			}
		})
	}
	if _, err := r.New("s", "subj", struct{ X int }{1}); !errors.Is(err, events.ErrUnknownType) {
		t.Fatalf("New with an unregistered Go type: %v", err)
	}
}

func TestParseBatchNamesTheBadElement(t *testing.T) {
	t.Parallel()
	good, _ := json.Marshal(fullEvent())
	body := "[" + string(good) + `,{"id":"x","source":"s","type":"T"}]`
	_, err := events.ParseBatch([]byte(body))
	if err == nil || !strings.Contains(err.Error(), "batch[1]") || !strings.Contains(err.Error(), "subject") {
		t.Fatalf("err = %v, want batch[1] and subject named", err)
	}
	evs, err := events.ParseBatch([]byte("[" + string(good) + "]"))
	if err != nil || len(evs) != 1 {
		t.Fatalf("good batch: %v %v", evs, err)
	}
}

func BenchmarkEncode(b *testing.B) {
	e := fullEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeTyped(b *testing.B) {
	r := events.NewRegistry()
	events.Register[registered](r, "UserRegistered", events.WithSchemaVersion(2))
	rec, err := events.Encode(fullEvent())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		e, err := events.Decode(rec)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Decode(e); err != nil {
			b.Fatal(err)
		}
	}
}
