package events

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// ErrDuplicateKey is returned for JSON data in which an object names a member twice:
// Go's decoder silently keeps the last one where other readers may keep the first,
// so such data means different things to different services.
var ErrDuplicateKey = errors.New("duplicate JSON object key")

// ErrNoData is returned for an event of a registered type whose Go type has fields
// but which carries no data at all (a Kafka null value): decoding it would give the
// zero value, silently.
var ErrNoData = errors.New("data missing")

// strictJSON decodes with encoding/json's meaning (v1 semantics: names matched
// case-insensitively) and two refusals that
// encoding/json lacks, checked in the same pass as the decoding: an object naming a
// member twice, and invalid UTF-8 (encoding/json replaces it silently).
//
// Why github.com/go-json-experiment/json (the Go team's encoding/json/v2, experimental
// in the standard library): encoding/json walks the input twice (checkValid, then
// the decode), and the checks above needed two more walks of our own; this decoder
// does all of it in one. Measured by BenchmarkDecodeRecord (internal/domain).
var strictJSON = jsonv2.JoinOptions(
	jsonv1.DefaultOptionsV1(),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
	jsonv1.ReportErrorsWithLegacySemantics(false), // errors that say which check failed
)

// escapedNUL is the JSON escape of a NUL character, which PostgreSQL text refuses.
var escapedNUL = []byte(`\u0000`)

// CheckJSON reports whether b is acceptable JSON data: valid UTF-8, no NUL character
// (raw or escaped as \u0000: PostgreSQL text refuses it), syntactically valid JSON,
// and no object naming a member twice (ErrDuplicateKey). It reads b once; the
// error, rare, is classified after.
// Empty data is accepted: an event may carry none.
func CheckJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if bytes.Contains(b, escapedNUL) || !jsontext.Value(b).IsValid() {
		return jsonProblem(b, nil)
	}
	return nil
}

// decodeJSON checks b as CheckJSON does and decodes it into v, in one pass.
// The error is one of CheckJSON's, or ErrInvalidJSON for JSON of the wrong shape.
func decodeJSON(b []byte, v any) error {
	if bytes.Contains(b, escapedNUL) {
		return jsonProblem(b, nil)
	}
	if err := jsonv2.Unmarshal(b, v, strictJSON); err != nil {
		return jsonProblem(b, err)
	}
	return nil
}

// jsonProblem names what is wrong with b, which failed a check or a decode (err,
// when known): in the order the checks are documented, so the first problem of
// several is the one named.
func jsonProblem(b []byte, err error) error {
	if !utf8.Valid(b) {
		return ErrInvalidUTF8
	}
	if bytes.IndexByte(b, 0) >= 0 || bytes.Contains(b, escapedNUL) {
		return ErrNULCharacter
	}
	if err == nil || isSemantic(err) {
		// Find the syntax problem, if any: it comes before a wrong shape.
		dec := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowDuplicateNames(false))
		serr := dec.SkipValue()
		if serr == nil {
			if _, terr := dec.ReadToken(); terr == nil {
				serr = fmt.Errorf("data after the top-level value at byte %d", dec.InputOffset())
			}
		}
		if serr != nil || err == nil {
			err = serr
		}
	}
	var se *jsontext.SyntacticError
	switch {
	case err == nil:
		return fmt.Errorf("%w: refused by the decoder", ErrInvalidJSON)
	case errors.Is(err, jsontext.ErrDuplicateName) && errors.As(err, &se):
		return fmt.Errorf("%w: %q", ErrDuplicateKey, se.JSONPointer.LastToken())
	case errors.Is(err, jsontext.ErrDuplicateName):
		return fmt.Errorf("%w: %w", ErrDuplicateKey, err)
	default:
		return fmt.Errorf("%w: %w", ErrInvalidJSON, err)
	}
}

// isSemantic reports whether err is about the JSON's meaning as a Go value, not its
// syntax.
func isSemantic(err error) bool {
	var se *jsonv2.SemanticError
	var syn *jsontext.SyntacticError
	return errors.As(err, &se) && !errors.As(err, &syn)
}
