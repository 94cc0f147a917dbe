package events

import (
	"errors"
	"fmt"
)

// Sentinel problems, wrapped in a *ValidationError that names the field. Callers
// branch with errors.Is.
var (
	ErrMissingAttribute = errors.New("required attribute missing")
	// ErrEncrypted: the data still holds encrypted personal fields; decrypt them
	// (package shred) before decoding.
	ErrEncrypted        = errors.New("data holds encrypted personal fields: decrypt before decoding")
	ErrInvalidAttribute = errors.New("invalid attribute")
	ErrInvalidJSON      = errors.New("invalid JSON")
	ErrInvalidUTF8      = errors.New("invalid UTF-8")
	ErrNULCharacter     = errors.New("NUL character")
	ErrUnknownType      = errors.New("unknown event type")
	ErrSchemaTooNew     = errors.New("schema version newer than this service knows")
	ErrNoUpcaster       = errors.New("no upcaster for schema version")
	ErrUnsupportedMedia = errors.New("unsupported content type")
)

// ValidationError says which field of an event is wrong and why.
type ValidationError struct {
	Field string // the CloudEvents attribute ("subject", "data", …) or "event" for the whole
	Err   error  // one of the sentinels above, possibly wrapped with detail
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("event %s: %v", e.Field, e.Err)
}

func (e *ValidationError) Unwrap() error { return e.Err }
