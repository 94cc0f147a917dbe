// Package shred is crypto-shredding for an immutable event log: a person's data in
// an event is encrypted under a data key of that person's own (the subject's), and
// forgetting the person deletes the key. Every later read — live, a replay from
// zero, a bootstrap, a point-in-time replay — then sees the fields redacted.
//
// An event type marks its personal fields when it is registered
// (events.WithPersonalData). Seal encrypts those fields before publishing, with
// AES-256-GCM under the subject's key, and records the algorithm, the key id and the
// encrypted fields in the event's extension attributes; every other field stays
// plain. Open decrypts; when the key is gone it puts Redacted in each personal field
// and lists them in Event.Redacted, so a handler never fails for a forgotten subject.
//
// Keys live in a KeyStore (PGKeys: PostgreSQL, each data key encrypted under a master
// key from configuration). Forgetting is KeyStore.Forget followed by a
// SubjectForgotten event on the subject's topic, which projections handle to purge
// or anonymise what they kept.
package shred

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/projector/projector/pkg/events"
)

// Algorithm is the value of the encryption attribute of a sealed event.
const Algorithm = "aes-256-gcm"

// Redacted is the marker value a personal field holds once its subject is forgotten.
const Redacted = "[forgotten]"

// TypeSubjectForgotten is the event type published when a subject is forgotten.
const TypeSubjectForgotten = "SubjectForgotten"

// SubjectForgotten is the event: a subject's personal data was shredded (its keys
// deleted). Its CloudEvents subject is the subject id too, so it lands in the
// subject's partition after the subject's events.
type SubjectForgotten struct {
	SubjectID string    `json:"subject_id"`
	At        time.Time `json:"forgotten_at"`
	Keys      int       `json:"keys_deleted"`
	Reason    string    `json:"reason,omitempty"`
}

// Register adds SubjectForgotten to a registry.
func Register(r *events.Registry) {
	events.Register[SubjectForgotten](r, TypeSubjectForgotten)
}

// Errors.
var (
	// ErrTampered: a ciphertext did not authenticate — altered, moved to another
	// event or field, or sealed under another key.
	ErrTampered = errors.New("personal data does not authenticate: tampered ciphertext or wrong key")
	// ErrUnknownAlgorithm: the event names an encryption this package does not know.
	ErrUnknownAlgorithm = errors.New("unknown encryption algorithm")
	// ErrSubjectForgotten: personal data of a forgotten subject cannot be sealed.
	ErrSubjectForgotten = errors.New("subject was forgotten: its personal data cannot be published")
	// ErrUnknownKey: the key is neither in the store nor among its forgotten keys —
	// most likely another key store (schema, database or environment) than the one
	// the producer used. Refused loudly rather than read as forgotten.
	ErrUnknownKey = errors.New("key unknown to this key store (neither held nor forgotten): is this the producer's key store?")
)

// Error is a permanent problem with one event's personal data (tampering, an unknown
// algorithm, a malformed field): the event cannot be read, and retrying will not
// help. It never holds plaintext.
type Error struct {
	EventID string
	Field   string
	KeyID   string
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("event %s: personal field %q (key %s): %v", e.EventID, e.Field, e.KeyID, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Key is a subject's data key. A forgotten key keeps its id and subject, and no
// secret.
type Key struct {
	ID        string
	Subject   string
	Forgotten bool
	aead      cipher.AEAD
	broken    error // the stored key does not open (a tampered row): its events cannot be read
}

// NewKey makes a Key from its id, subject and 32-byte secret.
func NewKey(id, subject string, secret []byte) (Key, error) {
	a, err := newAEAD(secret)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, Subject: subject, aead: a}, nil
}

func newAEAD(secret []byte) (cipher.AEAD, error) {
	if len(secret) != 32 {
		return nil, fmt.Errorf("shred: a key must be 32 bytes (AES-256), got %d", len(secret))
	}
	b, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// KeyStore keeps data keys. Implementations are safe for concurrent use.
type KeyStore interface {
	// DataKeys returns each subject's current key, creating the missing ones. A
	// forgotten subject gets none: the error wraps ErrSubjectForgotten and names it.
	DataKeys(ctx context.Context, subjects []string) (map[string]Key, error)
	// Lookup returns the keys with these ids: held ones, and forgotten ones marked
	// Forgotten; an id the store never knew is missing from the result.
	Lookup(ctx context.Context, ids []string) (map[string]Key, error)
	// Forget deletes every key of the subject, for good, and records when.
	Forget(ctx context.Context, subject string) (Forgetting, error)
	// Forgotten lists the subjects forgotten after since, oldest first.
	Forgotten(ctx context.Context, since time.Time) ([]Forgetting, error)
	// Evict drops the subject's keys from any cache, so the next read asks the store.
	Evict(subject string)
}

// Forgetting records that a subject was forgotten.
type Forgetting struct {
	Subject string    `json:"subject"`
	At      time.Time `json:"forgotten_at"`
	Keys    int       `json:"keys_deleted"`
}

// sealPlan is what Seal encrypts of one event: which fields, under whose key.
type sealPlan struct {
	i       int
	obj     map[string]json.RawMessage
	subject string
	fields  []string
}

// planSeal reads an event with personal data: its subject and the personal fields
// it holds (none: nothing to seal). A field spelled in another case is refused: Go's
// JSON decoder matches field names case-insensitively, so "Email" would be read as
// the email, and published in the clear.
func planSeal(i int, e *events.Event, pd events.PersonalData) (sealPlan, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(e.Data, &obj); err != nil {
		return sealPlan{}, &events.ValidationError{Field: "data", Err: fmt.Errorf("%w: personal data needs a JSON object: %w", events.ErrInvalidJSON, err)}
	}
	for k := range obj {
		for _, f := range append([]string{pd.SubjectField}, pd.Fields...) {
			if k != f && strings.EqualFold(k, f) {
				return sealPlan{}, &events.ValidationError{Field: "data." + k,
					Err: fmt.Errorf("%w: %s's field is spelled %q; %q would be read as it and published in the clear", events.ErrInvalidAttribute, e.Type, f, k)}
			}
		}
	}
	var subject string
	if raw, ok := obj[pd.SubjectField]; ok {
		_ = json.Unmarshal(raw, &subject)
	}
	if subject == "" {
		return sealPlan{}, &events.ValidationError{Field: "data." + pd.SubjectField,
			Err: fmt.Errorf("%w: %s has personal fields, and %q names their subject", events.ErrMissingAttribute, e.Type, pd.SubjectField)}
	}
	p := sealPlan{i: i, obj: obj, subject: subject}
	for _, f := range pd.Fields {
		if raw, ok := obj[f]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			p.fields = append(p.fields, f)
		}
	}
	return p, nil
}

// Seal encrypts the personal fields of each event whose type has any (see
// events.WithPersonalData), in place, fetching or creating the subjects' keys in one
// call. Events already sealed, and types without personal data, are left alone. The
// error names the event (by index) and the problem; on error no event is changed.
func Seal(ctx context.Context, keys KeyStore, reg *events.Registry, evs []events.Event) error {
	var plans []sealPlan
	var subjects []string
	for i := range evs {
		e := &evs[i]
		pd, ok := reg.PersonalData(e.Type)
		if !ok || e.Encrypted() || len(e.Data) == 0 {
			continue
		}
		p, err := planSeal(i, e, pd)
		if err != nil {
			return fmt.Errorf("event %d (%s): %w", i, e.ID, err)
		}
		if len(p.fields) == 0 {
			continue
		}
		plans = append(plans, p)
		subjects = append(subjects, p.subject)
	}
	if len(plans) == 0 {
		return nil
	}
	ks, err := keys.DataKeys(ctx, subjects)
	if err != nil {
		return err
	}
	out := make([]events.Event, len(plans))
	for n, p := range plans {
		e := evs[p.i]
		k, ok := ks[p.subject]
		if !ok {
			return fmt.Errorf("event %d (%s): no key for subject %q", p.i, e.ID, p.subject)
		}
		for _, f := range p.fields {
			nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(p.obj[f])+k.aead.Overhead())
			if _, err := rand.Read(nonce); err != nil {
				return err
			}
			sealed := k.aead.Seal(nonce, nonce, p.obj[f], aad(&e, k.ID, f))
			p.obj[f], _ = json.Marshal(base64.StdEncoding.EncodeToString(sealed))
		}
		data, err := marshalObject(p.obj)
		if err != nil {
			return err
		}
		e.Data, e.Encryption, e.KeyID, e.EncryptedFields = data, Algorithm, k.ID, p.fields
		out[n] = e
	}
	for n, p := range plans {
		evs[p.i] = out[n]
	}
	return nil
}

// prefetch loads the keys of the encrypted events into the store's cache in one
// call, so the Open calls that follow do not ask one by one. Errors are the store's
// (transient: retry).
func prefetch(ctx context.Context, keys KeyStore, evs []*events.Event) (map[string]Key, error) {
	var ids []string
	seen := map[string]bool{}
	for _, e := range evs {
		if e != nil && e.Encrypted() && !seen[e.KeyID] {
			seen[e.KeyID] = true
			ids = append(ids, e.KeyID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return keys.Lookup(ctx, ids)
}

// Open decrypts an event's personal fields in place with the keys in known, as
// keys.Lookup returned them for a batch of events (nil: ask the store). A field whose key is gone gets Redacted and is listed in
// e.Redacted. The encryption attributes are cleared: the data is plain now. A
// permanent problem (tampering, an unknown algorithm) is an *Error; any other error
// is the store's and transient.
func Open(ctx context.Context, keys KeyStore, known map[string]Key, e *events.Event) error {
	if !e.Encrypted() {
		return nil
	}
	if e.Encryption != Algorithm {
		return &Error{EventID: e.ID, Field: "encryption", KeyID: e.KeyID, Err: fmt.Errorf("%w: %q (this build knows %q)", ErrUnknownAlgorithm, e.Encryption, Algorithm)}
	}
	k, ok := known[e.KeyID]
	if !ok {
		got, err := keys.Lookup(ctx, []string{e.KeyID})
		if err != nil {
			return err
		}
		k, ok = got[e.KeyID]
	}
	if !ok {
		return &Error{EventID: e.ID, Field: "keyid", KeyID: e.KeyID, Err: ErrUnknownKey}
	}
	if k.broken != nil {
		return &Error{EventID: e.ID, Field: "keyid", KeyID: e.KeyID, Err: k.broken}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(e.Data, &obj); err != nil {
		return &Error{EventID: e.ID, Field: "data", KeyID: e.KeyID, Err: fmt.Errorf("%w: %w", events.ErrInvalidJSON, err)}
	}
	var redacted []string
	for _, f := range e.EncryptedFields {
		raw, present := obj[f]
		if !present {
			return &Error{EventID: e.ID, Field: f, KeyID: e.KeyID, Err: fmt.Errorf("%w: the field is missing", ErrTampered)}
		}
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return &Error{EventID: e.ID, Field: f, KeyID: e.KeyID, Err: fmt.Errorf("%w: not a base64 string", ErrTampered)}
		}
		sealed, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return &Error{EventID: e.ID, Field: f, KeyID: e.KeyID, Err: fmt.Errorf("%w: not base64", ErrTampered)}
		}
		if k.Forgotten {
			obj[f], _ = json.Marshal(Redacted)
			redacted = append(redacted, f)
			continue
		}
		ns := k.aead.NonceSize()
		if len(sealed) < ns+k.aead.Overhead() {
			return &Error{EventID: e.ID, Field: f, KeyID: e.KeyID, Err: fmt.Errorf("%w: %d bytes is too short", ErrTampered, len(sealed))}
		}
		plain, err := k.aead.Open(nil, sealed[:ns], sealed[ns:], aad(e, k.ID, f))
		if err != nil || !json.Valid(plain) {
			return &Error{EventID: e.ID, Field: f, KeyID: e.KeyID, Err: ErrTampered}
		}
		obj[f] = plain
	}
	data, err := marshalObject(obj)
	if err != nil {
		return err
	}
	e.Data, e.Redacted = data, redacted
	e.Encryption, e.KeyID, e.EncryptedFields = "", "", nil
	return nil
}

// aad binds a ciphertext to its event, key and field: moved anywhere else it does
// not authenticate.
func aad(e *events.Event, keyID, field string) []byte {
	var b bytes.Buffer
	for _, s := range []string{"projector/shred/v1", e.ID, e.Type, e.Subject, keyID, field} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	return b.Bytes()
}

func marshalObject(obj map[string]json.RawMessage) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// OpenAll decrypts every event's personal fields in place (see Open), looking the
// keys up in batches. It stops at the first error.
func OpenAll(ctx context.Context, keys KeyStore, evs []events.Event) error {
	const chunk = 4096
	for lo := 0; lo < len(evs); lo += chunk {
		part := evs[lo:min(lo+chunk, len(evs))]
		ptrs := make([]*events.Event, len(part))
		for i := range part {
			ptrs[i] = &part[i]
		}
		known, err := prefetch(ctx, keys, ptrs)
		if err != nil {
			return err
		}
		for i := range part {
			if err := Open(ctx, keys, known, &part[i]); err != nil {
				return err
			}
		}
	}
	return nil
}
