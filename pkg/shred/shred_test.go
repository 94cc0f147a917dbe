package shred_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// memKeys is an in-memory KeyStore for these unit tests of the cipher format; the
// PostgreSQL store is tested against the real database in pgkeys_test.go.
type memKeys struct {
	mu        sync.Mutex
	bySubject map[string]shred.Key
	byID      map[string]shred.Key
	forgotten map[string]time.Time
	gone      map[string]shred.Key
}

func newMemKeys() *memKeys {
	return &memKeys{bySubject: map[string]shred.Key{}, byID: map[string]shred.Key{}, forgotten: map[string]time.Time{}, gone: map[string]shred.Key{}}
}

func (m *memKeys) DataKeys(_ context.Context, subjects []string) (map[string]shred.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]shred.Key{}
	for _, s := range subjects {
		if _, gone := m.forgotten[s]; gone {
			return nil, fmt.Errorf("%q: %w", s, shred.ErrSubjectForgotten)
		}
		k, ok := m.bySubject[s]
		if !ok {
			secret := make([]byte, 32)
			_, _ = rand.Read(secret)
			var err error
			if k, err = shred.NewKey(fmt.Sprintf("k%d", len(m.byID)), s, secret); err != nil {
				return nil, err
			}
			m.bySubject[s], m.byID[k.ID] = k, k
		}
		out[s] = k
	}
	return out, nil
}

func (m *memKeys) Lookup(_ context.Context, ids []string) (map[string]shred.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]shred.Key{}
	for _, id := range ids {
		if k, ok := m.byID[id]; ok {
			out[id] = k
		} else if k, ok := m.gone[id]; ok {
			out[id] = k
		}
	}
	return out, nil
}

func (m *memKeys) Forget(_ context.Context, subject string) (shred.Forgetting, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	if k, ok := m.bySubject[subject]; ok {
		delete(m.byID, k.ID)
		delete(m.bySubject, subject)
		m.gone[k.ID] = shred.Key{ID: k.ID, Subject: subject, Forgotten: true}
		n = 1
	}
	m.forgotten[subject] = time.Now()
	return shred.Forgetting{Subject: subject, At: m.forgotten[subject], Keys: n}, nil
}

func (m *memKeys) Forgotten(context.Context, time.Time) ([]shred.Forgetting, error) { return nil, nil }
func (m *memKeys) Evict(string)                                                     {}

type registered struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
	Plan   string `json:"plan"`
}

func registry() *events.Registry {
	r := events.NewRegistry()
	events.Register[registered](r, "Registered", events.WithPersonalData("user_id", "email", "name"))
	return r
}

func sealed(t *testing.T, keys shred.KeyStore, users ...string) []events.Event {
	t.Helper()
	reg := registry()
	var evs []events.Event
	for _, u := range users {
		e, err := reg.New("test", u, registered{UserID: u, Email: u + "@example.test", Name: "Name <" + u + ">", Plan: "pro"})
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if err := shred.Seal(context.Background(), keys, reg, evs); err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestSealEncryptsOnlyThePersonalFieldsAndOpenRestoresThem(t *testing.T) {
	keys := newMemKeys()
	evs := sealed(t, keys, "u1", "u2")
	for _, e := range evs {
		if e.Encryption != shred.Algorithm || e.KeyID == "" || strings.Join(e.EncryptedFields, ",") != "email,name" {
			t.Fatalf("attributes: %+v", e)
		}
		if bytes.Contains(e.Data, []byte("example.test")) || bytes.Contains(e.Data, []byte("Name")) {
			t.Fatalf("plaintext in sealed data: %s", e.Data)
		}
		if !bytes.Contains(e.Data, []byte(`"plan":"pro"`)) || !bytes.Contains(e.Data, []byte(`"user_id":"`+e.Subject+`"`)) {
			t.Fatalf("plain fields must stay plain: %s", e.Data)
		}
		// The record codec carries the attributes through Kafka headers and JSON.
		rec, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := events.Decode(rec)
		if err != nil || back.KeyID != e.KeyID || strings.Join(back.EncryptedFields, ",") != "email,name" {
			t.Fatalf("round trip: %+v %v", back, err)
		}
		b, _ := json.Marshal(e)
		viaJSON, err := events.ParseStructured(b)
		if err != nil || viaJSON.Encryption != shred.Algorithm {
			t.Fatalf("structured round trip: %+v %v", viaJSON, err)
		}
	}
	// An encrypted event is not decoded as if it were plain.
	if _, err := registry().Decode(evs[0]); !errors.Is(err, events.ErrEncrypted) {
		t.Fatalf("Decode of a sealed event: %v, want ErrEncrypted", err)
	}
	if err := shred.OpenAll(context.Background(), keys, evs); err != nil {
		t.Fatal(err)
	}
	d, err := registry().Decode(evs[1])
	if err != nil {
		t.Fatal(err)
	}
	if v := d.Value.(registered); v.Email != "u2@example.test" || v.Name != "Name <u2>" || v.Plan != "pro" || len(d.Redacted) != 0 {
		t.Fatalf("opened %+v (redacted %v)", v, d.Redacted)
	}
}

func TestAForgottenSubjectReadsRedactedNeverAnError(t *testing.T) {
	keys := newMemKeys()
	evs := sealed(t, keys, "u1", "u2")
	if _, err := keys.Forget(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	if err := shred.OpenAll(context.Background(), keys, evs); err != nil {
		t.Fatal(err)
	}
	d, err := registry().Decode(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	v := d.Value.(registered)
	if v.Email != shred.Redacted || v.Name != shred.Redacted || v.Plan != "pro" || strings.Join(d.Redacted, ",") != "email,name" {
		t.Fatalf("forgotten subject reads %+v, redacted %v", v, d.Redacted)
	}
	if d2, _ := registry().Decode(evs[1]); d2.Value.(registered).Email != "u2@example.test" {
		t.Fatal("another subject was affected")
	}
	if err := shred.Seal(context.Background(), keys, registry(), []events.Event{evs[0]}); err == nil {
		// evs[0] is opened (plain) again: sealing it for a forgotten subject must fail.
		t.Fatal("sealed personal data of a forgotten subject")
	}
}

func TestTamperingIsACleanErrorNamingTheEventAndField(t *testing.T) {
	keys := newMemKeys()
	cases := map[string]func(e *events.Event){
		"flipped byte": func(e *events.Event) {
			var obj map[string]string
			_ = json.Unmarshal(e.Data, &obj)
			raw, _ := base64.StdEncoding.DecodeString(obj["email"])
			raw[len(raw)-1] ^= 1
			obj["email"] = base64.StdEncoding.EncodeToString(raw)
			e.Data, _ = json.Marshal(obj)
		},
		"fields swapped": func(e *events.Event) {
			var obj map[string]string
			_ = json.Unmarshal(e.Data, &obj)
			obj["email"], obj["name"] = obj["name"], obj["email"]
			e.Data, _ = json.Marshal(obj)
		},
		"moved to another event": func(e *events.Event) { e.ID = events.NewID() },
		"not base64":             func(e *events.Event) { e.Data = json.RawMessage(`{"user_id":"u1","email":"%%%","name":"x"}`) },
		"field removed":          func(e *events.Event) { e.Data = json.RawMessage(`{"user_id":"u1","name":"x"}`) },
		"unknown algorithm":      func(e *events.Event) { e.Encryption = "rot13" },
		"key of another store":   func(e *events.Event) { e.KeyID = "k999" },
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			e := sealed(t, keys, "u1")[0]
			tamper(&e)
			err := shred.Open(context.Background(), keys, nil, &e)
			var se *shred.Error
			if !errors.As(err, &se) || se.EventID != e.ID {
				t.Fatalf("err = %v, want a *shred.Error naming the event", err)
			}
			if strings.Contains(err.Error(), "u1@example.test") {
				t.Fatalf("the error holds plaintext: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestPersonalDataRegistrationChecksItsFields(t *testing.T) {
	for name, opt := range map[string]events.TypeOption{
		"missing field":       events.WithPersonalData("user_id", "phone"),
		"subject is personal": events.WithPersonalData("user_id", "user_id", "email"),
		"no subject":          events.WithPersonalData("", "email"),
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			events.Register[registered](events.NewRegistry(), "Registered", opt)
		})
	}
}

func TestMasterKeyParsing(t *testing.T) {
	k := shred.NewMasterKey()
	if b, err := shred.ParseMasterKey(k); err != nil || len(b) != 32 {
		t.Fatalf("%q: %v", k, err)
	}
	if b, err := shred.ParseMasterKey(strings.Repeat("ab", 32)); err != nil || len(b) != 32 {
		t.Fatalf("hex: %v", err)
	}
	for _, bad := range []string{"", "short", base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		if _, err := shred.ParseMasterKey(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
