package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is one Kafka record header. This package knows nothing of Kafka clients: the
// client adapter (package eventlog) copies these to and from its own record type.
type Header struct {
	Key   string
	Value []byte
}

// Record is the Kafka form of an event: key, value and headers.
type Record struct {
	Key     []byte
	Value   []byte
	Headers []Header
}

// Header names of the CloudEvents Kafka protocol binding, binary content mode.
const (
	HeaderPrefix      = "ce_"
	HeaderContentType = "content-type"
	// ContentTypeStructured marks a record whose value is the whole event as JSON.
	ContentTypeStructured = "application/cloudevents+json"
	// ContentTypeBatch is the HTTP batch format: a JSON array of structured events.
	ContentTypeBatch = "application/cloudevents-batch+json"
)

// Encode returns the event's Kafka record in binary content mode: attributes in ce_*
// headers, the data's media type in content-type, the data as the value, the subject
// as the key. The event is validated first.
func Encode(e Event) (Record, error) {
	if err := e.Validate(); err != nil {
		return Record{}, err
	}
	h := make([]Header, 0, 12)
	add := func(name, value string) {
		if value != "" {
			h = append(h, Header{Key: HeaderPrefix + name, Value: []byte(value)})
		}
	}
	add("specversion", SpecVersion)
	add("id", e.ID)
	add("source", e.Source)
	add("type", e.Type)
	add("subject", e.Subject)
	if !e.Time.IsZero() {
		add("time", e.Time.UTC().Format(time.RFC3339Nano))
	}
	if e.Sequence > 0 {
		add("sequence", strconv.FormatUint(e.Sequence, 10))
	}
	if e.SchemaVersion > 0 {
		add("schemaversion", strconv.Itoa(e.SchemaVersion))
	}
	add("correlationid", e.CorrelationID)
	add("causationid", e.CausationID)
	add("traceparent", e.TraceParent)
	add("encryption", e.Encryption)
	add("keyid", e.KeyID)
	add("encryptedfields", strings.Join(e.EncryptedFields, ","))
	h = append(h, Header{Key: HeaderContentType, Value: []byte(e.ContentType())})
	return Record{Key: []byte(e.Subject), Value: e.Data, Headers: h}, nil
}

// Decode reads an event from a Kafka record in either content mode: structured when
// the content-type header is application/cloudevents+json (any client may write the
// whole event as JSON), binary otherwise. A missing subject falls back to the key.
// The event is validated; the error names the field.
func Decode(r Record) (Event, error) {
	var ct string
	var ce attributes
	for _, h := range r.Headers {
		switch k := h.Key; {
		case k == HeaderContentType || strings.EqualFold(k, HeaderContentType):
			ct = string(h.Value)
		case len(k) > len(HeaderPrefix) && strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix):
			ce.set(k[len(HeaderPrefix):], h.Value)
		}
	}
	var e Event
	var err error
	if mt, _, _ := strings.Cut(ct, ";"); strings.EqualFold(strings.TrimSpace(mt), ContentTypeStructured) {
		e, err = ParseStructured(r.Value)
	} else {
		e, err = ce.event(ct, r.Value)
	}
	if err != nil {
		return Event{}, err
	}
	if e.Subject == "" {
		e.Subject = string(r.Key)
	}
	return e, e.Validate()
}

// attributes are the ce_* headers of a record in binary content mode, by name
// without the prefix; a header given twice keeps its last value.
type attributes struct {
	specversion                                      string
	hasSpecversion                                   bool
	id, source, typ, subject, time, sequence, schema string
	correlationid, causationid, traceparent          string
	encryption, keyid, encryptedfields               string
}

// set records header name (without the prefix, in any case) with value.
func (a *attributes) set(name string, value []byte) {
	var dst *string
	switch strings.ToLower(name) { // no allocation when already lower case
	case "specversion":
		a.specversion, a.hasSpecversion = string(value), true
		return
	case "id":
		dst = &a.id
	case "source":
		dst = &a.source
	case "type":
		dst = &a.typ
	case "subject":
		dst = &a.subject
	case "time":
		dst = &a.time
	case "sequence":
		dst = &a.sequence
	case "schemaversion":
		dst = &a.schema
	case "correlationid":
		dst = &a.correlationid
	case "causationid":
		dst = &a.causationid
	case "traceparent":
		dst = &a.traceparent
	case "encryption":
		dst = &a.encryption
	case "keyid":
		dst = &a.keyid
	case "encryptedfields":
		dst = &a.encryptedfields
	default:
		return // an extension this package does not know
	}
	*dst = string(value)
}

func (a *attributes) event(contentType string, data []byte) (Event, error) {
	if a.hasSpecversion && a.specversion != SpecVersion {
		return Event{}, &ValidationError{Field: "specversion", Err: fmt.Errorf("%w: %q, want %q", ErrInvalidAttribute, a.specversion, SpecVersion)}
	}
	e := Event{
		ID: a.id, Source: a.source, Type: a.typ, Subject: a.subject,
		DataContentType: contentType, CorrelationID: a.correlationid,
		CausationID: a.causationid, TraceParent: a.traceparent,
		Encryption: a.encryption, KeyID: a.keyid, EncryptedFields: splitFields(a.encryptedfields),
	}
	if len(data) > 0 {
		e.Data = json.RawMessage(data)
	}
	if err := e.setExtensions(a.time, a.sequence, a.schema); err != nil {
		return Event{}, err
	}
	return e, nil
}

func (e *Event) setExtensions(t, seq, schema string) error {
	if t != "" {
		ts, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return &ValidationError{Field: "time", Err: fmt.Errorf("%w: %q is not RFC 3339", ErrInvalidAttribute, t)}
		}
		e.Time = ts
	}
	if seq != "" {
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return &ValidationError{Field: "sequence", Err: fmt.Errorf("%w: %q is not a non-negative integer", ErrInvalidAttribute, seq)}
		}
		e.Sequence = n
	}
	if schema != "" {
		n, err := strconv.Atoi(schema)
		if err != nil || n < 1 {
			return &ValidationError{Field: "schemaversion", Err: fmt.Errorf("%w: %q is not a positive integer", ErrInvalidAttribute, schema)}
		}
		e.SchemaVersion = n
	}
	return nil
}

// structured is the JSON form of an event (CloudEvents JSON format).
type structured struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            string          `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      string          `json:"data_base64,omitempty"`
	Sequence        json.RawMessage `json:"sequence,omitempty"`
	SchemaVersion   json.RawMessage `json:"schemaversion,omitempty"`
	CorrelationID   string          `json:"correlationid,omitempty"`
	CausationID     string          `json:"causationid,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"`
	Encryption      string          `json:"encryption,omitempty"`
	KeyID           string          `json:"keyid,omitempty"`
	EncryptedFields string          `json:"encryptedfields,omitempty"`
}

// MarshalJSON writes the event in the CloudEvents JSON format (structured mode).
func (e Event) MarshalJSON() ([]byte, error) {
	s := structured{
		SpecVersion: SpecVersion, ID: e.ID, Source: e.Source, Type: e.Type, Subject: e.Subject,
		DataContentType: e.DataContentType, CorrelationID: e.CorrelationID,
		CausationID: e.CausationID, TraceParent: e.TraceParent,
		Encryption: e.Encryption, KeyID: e.KeyID, EncryptedFields: strings.Join(e.EncryptedFields, ","),
	}
	if !e.Time.IsZero() {
		s.Time = e.Time.UTC().Format(time.RFC3339Nano)
	}
	if e.Sequence > 0 {
		s.Sequence = json.RawMessage(strconv.Quote(strconv.FormatUint(e.Sequence, 10)))
	}
	if e.SchemaVersion > 0 {
		s.SchemaVersion = json.RawMessage(strconv.Quote(strconv.Itoa(e.SchemaVersion)))
	}
	if len(e.Data) > 0 {
		if isJSON(e.ContentType()) {
			s.Data = e.Data
		} else {
			s.DataBase64 = base64.StdEncoding.EncodeToString(e.Data)
		}
	}
	return json.Marshal(s)
}

// ParseStructured reads one event in the CloudEvents JSON format. It checks the bytes
// (UTF-8, NUL, JSON syntax) before decoding, and validates the result.
func ParseStructured(b []byte) (Event, error) {
	if err := CheckJSON(b); err != nil {
		return Event{}, &ValidationError{Field: "event", Err: err}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return Event{}, &ValidationError{Field: "event", Err: fmt.Errorf("%w: empty", ErrInvalidJSON)}
	}
	var s structured
	if err := json.Unmarshal(b, &s); err != nil {
		return Event{}, &ValidationError{Field: "event", Err: fmt.Errorf("%w: %w", ErrInvalidJSON, err)}
	}
	if s.SpecVersion != "" && s.SpecVersion != SpecVersion {
		return Event{}, &ValidationError{Field: "specversion", Err: fmt.Errorf("%w: %q, want %q", ErrInvalidAttribute, s.SpecVersion, SpecVersion)}
	}
	e := Event{
		ID: s.ID, Source: s.Source, Type: s.Type, Subject: s.Subject,
		DataContentType: s.DataContentType, CorrelationID: s.CorrelationID,
		CausationID: s.CausationID, TraceParent: s.TraceParent,
		Encryption: s.Encryption, KeyID: s.KeyID, EncryptedFields: splitFields(s.EncryptedFields),
	}
	switch {
	case len(s.Data) > 0 && !bytes.Equal(s.Data, []byte("null")):
		if !isJSON(e.ContentType()) {
			// A string "data" member carries text of a non-JSON media type.
			var text string
			if err := json.Unmarshal(s.Data, &text); err != nil {
				return Event{}, &ValidationError{Field: "data", Err: fmt.Errorf("%w: %s data must be a JSON string or data_base64", ErrUnsupportedMedia, e.ContentType())}
			}
			e.Data = json.RawMessage(text)
		} else {
			e.Data = s.Data
		}
	case s.DataBase64 != "":
		raw, err := base64.StdEncoding.DecodeString(s.DataBase64)
		if err != nil {
			return Event{}, &ValidationError{Field: "data_base64", Err: fmt.Errorf("%w: %w", ErrInvalidAttribute, err)}
		}
		e.Data = raw
	}
	if err := e.setExtensions(s.Time, jsonScalar(s.Sequence), jsonScalar(s.SchemaVersion)); err != nil {
		return Event{}, err
	}
	return e, e.Validate()
}

// ParseBatch reads a JSON array of structured events (application/cloudevents-batch+json).
// The error of a bad element names its index.
func ParseBatch(b []byte) ([]Event, error) {
	if err := CheckJSON(b); err != nil {
		return nil, &ValidationError{Field: "batch", Err: err}
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, &ValidationError{Field: "batch", Err: fmt.Errorf("%w: want a JSON array of events: %w", ErrInvalidJSON, err)}
	}
	out := make([]Event, 0, len(raw))
	for i, r := range raw {
		e, err := ParseStructured(r)
		if err != nil {
			return nil, fmt.Errorf("batch[%d]: %w", i, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// jsonScalar turns a JSON string or number into its text ("7" for both 7 and "7").
func jsonScalar(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// splitFields reads a comma-separated field list; empty gives nil.
func splitFields(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
