package events_test

import (
	"errors"
	"testing"

	"github.com/projector/projector/pkg/events"
)

// Found by the reliability suite (scenario 9): data naming a member twice was
// decoded with the last value winning, silently; a null value of a type with fields
// decoded to its zero value (a user with an empty id).
func TestDuplicateKeysAreRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		data string
		dup  bool
	}{
		{`{"a":1,"b":2}`, false},
		{`{"a":1,"a":2}`, true},
		{`{"a":{"x":1,"y":2},"b":[{"x":1},{"x":2}]}`, false},
		{`{"a":{"x":1,"x":2}}`, true},
		{`[{"x":1,"y":{"x":3}},{"x":2,"x":4}]`, true},
		{`{"a":[1,2,{"b":1}],"c":"{\"a\":1,\"a\":2}"}`, false},
		{`{"":1,"":2}`, true},
		{`"text"`, false},
		{`{}`, false},
	} {
		err := events.CheckJSON([]byte(tc.data))
		if got := errors.Is(err, events.ErrDuplicateKey); got != tc.dup {
			t.Errorf("%s: %v, want duplicate %v", tc.data, err, tc.dup)
		}
	}
}

type withFields struct {
	Name string `json:"name"`
}

type noFields struct{}

func TestMissingDataIsRefusedForATypeWithFields(t *testing.T) {
	t.Parallel()
	reg := events.NewRegistry()
	events.Register[withFields](reg, "WithFields")
	events.Register[noFields](reg, "NoFields")
	_, err := reg.Decode(events.Event{ID: "1", Source: "t", Type: "WithFields", Subject: "s"})
	if !errors.Is(err, events.ErrNoData) {
		t.Fatalf("no data for a type with fields: %v, want ErrNoData", err)
	}
	if _, err := reg.Decode(events.Event{ID: "2", Source: "t", Type: "NoFields", Subject: "s"}); err != nil {
		t.Fatalf("no data for a type without fields: %v", err)
	}
	d, err := reg.Decode(events.Event{ID: "3", Source: "t", Type: "WithFields", Subject: "s", Data: []byte(`{"name":"a","name":"b"}`)})
	if !errors.Is(err, events.ErrDuplicateKey) {
		t.Fatalf("duplicate keys decoded as %+v, %v", d, err)
	}
}

func TestDuplicateKeysManyMembersAndEscapes(t *testing.T) {
	t.Parallel()
	many := `{`
	for i := range 40 {
		many += `"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1,`
	}
	if err := events.CheckJSON([]byte(many + `"z":2}`)); err != nil {
		t.Fatalf("40 distinct members: %v", err)
	}
	if err := events.CheckJSON([]byte(many + `"kaa":2}`)); !errors.Is(err, events.ErrDuplicateKey) {
		t.Fatalf("a repeat after 40 members: %v", err)
	}
	if err := events.CheckJSON([]byte(`{"a\"b":1,"a\u0022b":2}`)); !errors.Is(err, events.ErrDuplicateKey) {
		t.Fatalf("the same key spelt with an escape: %v", err)
	}
	if err := events.CheckJSON([]byte(`{"a\\":1,"a":2,"s":"}{\"a\":"}`)); err != nil {
		t.Fatalf("escapes in keys and braces in strings: %v", err)
	}
}

// Decoding keeps encoding/json's meaning (names matched case-insensitively) while
// it checks, in the same pass, what encoding/json lets through.
func TestDecodeKeepsEncodingJSONMeaning(t *testing.T) {
	t.Parallel()
	reg := events.NewRegistry()
	events.Register[withFields](reg, "WithFields")
	ev := func(data string) events.Event {
		return events.Event{ID: "1", Source: "t", Type: "WithFields", Subject: "s", Data: []byte(data)}
	}
	d, err := reg.Decode(ev(`{"NAME":"a","other":[1,{"x":null}]}`))
	if v, _ := events.As[withFields](d); err != nil || v.Name != "a" {
		t.Fatalf("a member named in another case: %+v, %v", d.Value, err)
	}
	for _, tc := range []struct {
		data string
		want error
		// syntax: CheckJSON, which knows no Go type, refuses it too
		syntax bool
	}{
		{`{"name":"a","Name":"b"}`, events.ErrDuplicateKey, false}, // both would fill Name: the last would win
		{`{"name":"a","x":{"y":1,"y":2}}`, events.ErrDuplicateKey, true},
		{"{\"name\":\"\xff\"}", events.ErrInvalidUTF8, true},
		{`{"name":"a\u0000"}`, events.ErrNULCharacter, true},
		{`{"name":"a"} {}`, events.ErrInvalidJSON, true},
		{`{"name":1}`, events.ErrInvalidJSON, false},
		{`{"name":"\ud800"}`, events.ErrInvalidJSON, true}, // a lone surrogate: PostgreSQL's jsonb refuses it too
	} {
		if _, err := reg.Decode(ev(tc.data)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.data, err, tc.want)
		}
		if err := events.CheckJSON([]byte(tc.data)); tc.syntax && !errors.Is(err, tc.want) {
			t.Errorf("CheckJSON(%s): %v, want %v", tc.data, err, tc.want)
		}
	}
}
