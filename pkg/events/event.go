package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// SpecVersion is the CloudEvents version this package reads and writes.
const SpecVersion = "1.0"

// ContentTypeJSON is the media type of an event's data; the only one the registry decodes.
const ContentTypeJSON = "application/json"

// Event is one CloudEvents 1.0 event. Subject is the aggregate id: it is also the Kafka
// message key, so one aggregate's events stay in one partition, in order.
type Event struct {
	ID              string          // unique per event (a UUID or ULID); consumers deduplicate on it
	Source          string          // the producing service, e.g. "users-api"
	Type            string          // the event type, e.g. "UserRegistered"
	Subject         string          // the aggregate id; the Kafka key
	Time            time.Time       // when it happened
	DataContentType string          // the data's media type; empty means application/json
	Data            json.RawMessage // the payload, JSON

	// Extensions.
	Sequence      uint64 // the aggregate's version after this event: 1, 2, 3, …; 0 = unset
	SchemaVersion int    // the data's schema version; 0 = unset, read as 1
	CorrelationID string // the request or saga this event belongs to
	CausationID   string // the id of the event or command that caused this one
	TraceParent   string // W3C trace context

	// Personal data (crypto-shredding, package shred): set when some data fields hold
	// ciphertext. Encryption names the algorithm ("aes-256-gcm"), KeyID the subject's
	// data key, EncryptedFields the top-level data fields that are encrypted.
	Encryption      string
	KeyID           string
	EncryptedFields []string

	// Redacted lists the personal fields that were replaced by a redaction marker on
	// read because their subject's key is gone (forgotten). Set by package shred when
	// it decrypts; never encoded.
	Redacted []string
}

// NewID returns a fresh event id: a UUIDv7, time-ordered and unique.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// ContentType returns the data's media type, application/json when unset.
func (e *Event) ContentType() string {
	if e.DataContentType == "" {
		return ContentTypeJSON
	}
	return e.DataContentType
}

// Schema returns the data's schema version, 1 when unset.
func (e *Event) Schema() int {
	if e.SchemaVersion <= 0 {
		return 1
	}
	return e.SchemaVersion
}

// Validate checks the required attributes and the data: an id, source, type and
// subject, no attribute with invalid UTF-8 or a NUL, and JSON data that is valid JSON,
// valid UTF-8 and free of NUL characters. The error is a *ValidationError naming the field.
func (e *Event) Validate() error {
	required := []struct{ name, value string }{
		{"id", e.ID}, {"source", e.Source}, {"type", e.Type}, {"subject", e.Subject},
	}
	for _, a := range required {
		if strings.TrimSpace(a.value) == "" {
			return &ValidationError{Field: a.name, Err: ErrMissingAttribute}
		}
	}
	optional := []struct{ name, value string }{
		{"id", e.ID}, {"source", e.Source}, {"type", e.Type}, {"subject", e.Subject},
		{"datacontenttype", e.DataContentType}, {"correlationid", e.CorrelationID},
		{"causationid", e.CausationID}, {"traceparent", e.TraceParent},
	}
	for _, a := range optional {
		if err := checkText(a.value); err != nil {
			return &ValidationError{Field: a.name, Err: err}
		}
	}
	if err := e.checkEncryption(); err != nil {
		return err
	}
	if e.SchemaVersion < 0 {
		return &ValidationError{Field: "schemaversion", Err: fmt.Errorf("%w: %d is negative", ErrInvalidAttribute, e.SchemaVersion)}
	}
	if isJSON(e.ContentType()) {
		if err := CheckJSON(e.Data); err != nil {
			return &ValidationError{Field: "data", Err: err}
		}
	}
	return nil
}

func checkText(s string) error {
	if !utf8.ValidString(s) {
		return ErrInvalidUTF8
	}
	if strings.IndexByte(s, 0) >= 0 {
		return ErrNULCharacter
	}
	return nil
}

func isJSON(mediaType string) bool {
	mt, _, _ := strings.Cut(mediaType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == ContentTypeJSON || strings.HasSuffix(mt, "+json") || mt == "text/json"
}

// checkEncryption checks that the encryption attributes come together: an algorithm,
// a key id and at least one field, or none of them.
func (e *Event) checkEncryption() error {
	if e.Encryption == "" && e.KeyID == "" && len(e.EncryptedFields) == 0 {
		return nil
	}
	switch {
	case e.Encryption == "":
		return &ValidationError{Field: "encryption", Err: fmt.Errorf("%w: keyid or encryptedfields set without encryption", ErrMissingAttribute)}
	case e.KeyID == "":
		return &ValidationError{Field: "keyid", Err: fmt.Errorf("%w: encryption %q without a key id", ErrMissingAttribute, e.Encryption)}
	case len(e.EncryptedFields) == 0:
		return &ValidationError{Field: "encryptedfields", Err: fmt.Errorf("%w: encryption %q without fields", ErrMissingAttribute, e.Encryption)}
	}
	for _, v := range append([]string{e.Encryption, e.KeyID}, e.EncryptedFields...) {
		if err := checkText(v); err != nil {
			return &ValidationError{Field: "encryption", Err: err}
		}
		if v == "" || strings.ContainsAny(v, ", ") {
			return &ValidationError{Field: "encryptedfields", Err: fmt.Errorf("%w: %q", ErrInvalidAttribute, v)}
		}
	}
	return nil
}

// Encrypted reports whether some of the event's data fields are encrypted.
func (e *Event) Encrypted() bool { return e.Encryption != "" }
