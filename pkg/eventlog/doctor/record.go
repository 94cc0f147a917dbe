package doctor

import (
	"bytes"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/pkg/events"
)

// attrs are a record's CloudEvents attributes as they sit in its headers (binary
// mode), or taken from the event the decoder built (structured mode). The slices
// alias the record: nothing is copied unless a finding keeps it.
type attrs struct {
	id, source, typ, subject          []byte
	specversion, time, seq, schema    []byte
	contentType                       []byte
	correlation, causation, trace     []byte
	encryption, keyID, encryptedField []byte
	hasContentType, hasSpecversion    bool
	sequence                          uint64
}

// readHeaders fills a from the record's headers, as events.Decode reads them: header
// names are case-insensitive, and a later header wins over an earlier one.
func (a *attrs) readHeaders(hs []kafka.Header) {
	for i := range hs {
		h := &hs[i]
		name := h.Key
		if !isLowerASCII(name) {
			name = strings.ToLower(name)
		}
		if name == events.HeaderContentType {
			a.contentType, a.hasContentType = h.Value, true
			continue
		}
		if !strings.HasPrefix(name, events.HeaderPrefix) {
			continue
		}
		v := h.Value
		switch name[len(events.HeaderPrefix):] {
		case "id":
			a.id = v
		case "source":
			a.source = v
		case "type":
			a.typ = v
		case "subject":
			a.subject = v
		case "specversion":
			a.specversion, a.hasSpecversion = v, true
		case "time":
			a.time = v
		case "sequence":
			a.seq = v
		case "schemaversion":
			a.schema = v
		case "correlationid":
			a.correlation = v
		case "causationid":
			a.causation = v
		case "traceparent":
			a.trace = v
		case "encryption":
			a.encryption = v
		case "keyid":
			a.keyID = v
		case "encryptedfields":
			a.encryptedField = v
		}
	}
}

func isLowerASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// structured reports whether the record is in structured content mode, by the test
// events.Decode uses.
func (a *attrs) structured() bool {
	if !a.hasContentType {
		return false
	}
	mt, _, _ := bytes.Cut(a.contentType, []byte(";"))
	return bytes.EqualFold(bytes.TrimSpace(mt), []byte(events.ContentTypeStructured))
}

// fromEvent fills a from an event the decoder built (structured mode).
func (a *attrs) fromEvent(e *events.Event) {
	*a = attrs{
		id: []byte(e.ID), source: []byte(e.Source), typ: []byte(e.Type), subject: []byte(e.Subject),
		encryption: []byte(e.Encryption), keyID: []byte(e.KeyID),
		encryptedField: []byte(strings.Join(e.EncryptedFields, ",")), sequence: e.Sequence,
	}
}

// binaryOK reports whether events.Decode would accept a binary-mode record with
// these attributes, key and value, and sets a.sequence and a.subject (the key stands
// in for a missing subject). It checks what Decode checks, in no particular order:
// only the verdict must match (TestFastPathAgreesWithDecode); the error reported
// for a record found wrong is Decode's own. With checkData false the data is not
// looked at.
func (a *attrs) binaryOK(key, value []byte, checkData bool) bool {
	if a.hasSpecversion && string(a.specversion) != events.SpecVersion {
		return false
	}
	if len(a.time) > 0 {
		if _, err := time.Parse(time.RFC3339Nano, string(a.time)); err != nil {
			return false
		}
	}
	if len(a.seq) > 0 {
		n, ok := parseUint(a.seq)
		if !ok {
			return false
		}
		a.sequence = n
	}
	if len(a.schema) > 0 && !positiveInt(a.schema) {
		return false
	}
	if len(a.subject) == 0 {
		a.subject = key
	}
	for _, v := range [...][]byte{a.id, a.source, a.typ, a.subject} {
		if len(bytes.TrimSpace(v)) == 0 {
			return false
		}
	}
	for _, v := range [...][]byte{a.id, a.source, a.typ, a.subject, a.contentType, a.correlation, a.causation, a.trace} {
		if !textOK(v) {
			return false
		}
	}
	if !a.encryptionOK() {
		return false
	}
	if checkData && len(value) > 0 && isJSON(a.contentType) {
		return events.CheckJSON(value) == nil
	}
	return true
}

// encryptionOK mirrors the decoder's rule: algorithm, key id and fields all set, or
// none of them; no value empty, with a comma or a space, or bad text.
func (a *attrs) encryptionOK() bool {
	if len(a.encryption) == 0 && len(a.keyID) == 0 && len(a.encryptedField) == 0 {
		return true
	}
	if len(a.encryption) == 0 || len(a.keyID) == 0 || len(a.encryptedField) == 0 {
		return false
	}
	ok := func(v []byte) bool {
		return len(v) > 0 && textOK(v) && !bytes.ContainsAny(v, ", ")
	}
	if !ok(a.encryption) || !ok(a.keyID) {
		return false
	}
	for f := range bytes.SplitSeq(a.encryptedField, []byte(",")) {
		if !ok(f) {
			return false
		}
	}
	return true
}

// encryptedFields returns the fields the encryption attributes cover.
func (a *attrs) encryptedFields() []string {
	if len(a.encryption) == 0 || len(a.encryptedField) == 0 {
		return nil
	}
	return strings.Split(string(a.encryptedField), ",")
}

func textOK(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// parseUint is strconv.ParseUint(s, 10, 64) on bytes, without the string.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// positiveInt reports whether strconv.Atoi accepts b and gives at least 1.
func positiveInt(b []byte) bool {
	if len(b) > 0 && b[0] == '+' {
		b = b[1:]
	} else if len(b) > 0 && b[0] == '-' {
		return false // Atoi gives 0 or less, or fails
	}
	n, ok := parseUint(b)
	return ok && n >= 1 && n <= 1<<63-1
}

// isJSON is the decoder's test of a JSON media type; an empty one means JSON.
func isJSON(contentType []byte) bool {
	if len(contentType) == 0 {
		return true
	}
	mt, _, _ := bytes.Cut(contentType, []byte(";"))
	mt = bytes.TrimSpace(mt)
	var t string
	if s := string(mt); isLowerASCII(s) { // no allocation: the compiler reads mt in place
		t = s
	} else {
		t = strings.ToLower(s)
	}
	return t == events.ContentTypeJSON || strings.HasSuffix(t, "+json") || t == "text/json"
}
