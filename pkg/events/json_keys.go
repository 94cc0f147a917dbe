package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrDuplicateKey is returned for JSON data in which an object names a member twice:
// Go's decoder silently keeps the last one where other readers may keep the first,
// so such data means different things to different services.
var ErrDuplicateKey = errors.New("duplicate JSON object key")

// ErrNoData is returned for an event of a registered type whose Go type has fields
// but which carries no data at all (a Kafka null value): decoding it would give the
// zero value, silently.
var ErrNoData = errors.New("data missing")

// checkDuplicateKeys scans JSON that is already known to be valid and reports the
// first object member named twice. It is a byte scanner, not a decoder: the check
// runs on every event, and encoding/json's tokenizer cost ten times the rest of
// CheckJSON.
func checkDuplicateKeys(b []byte) error {
	if bytes.IndexByte(b, '{') < 0 {
		return nil // no object, no key
	}
	type frame struct {
		object    bool
		expectKey bool
		keys      [][]byte        // the members so far, while few
		set       map[string]bool // once many
	}
	stack := make([]frame, 0, 8)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{':
			stack = append(stack, frame{object: true, expectKey: true})
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = true
			}
		case '"':
			j := i + 1
			escaped := false
			for j < len(b) {
				k := bytes.IndexAny(b[j:], `"\\`)
				if k < 0 {
					j = len(b)
					break
				}
				j += k
				if b[j] == '"' {
					break
				}
				escaped = true
				j += 2
			}
			n := len(stack)
			if n == 0 || !stack[n-1].expectKey {
				i = j
				continue
			}
			f := &stack[n-1]
			f.expectKey = false
			key := b[i+1 : min(j, len(b))]
			if escaped {
				var k string
				if err := json.Unmarshal(b[i:min(j+1, len(b))], &k); err == nil {
					key = []byte(k)
				}
			}
			i = j
			if f.set == nil && len(f.keys) < 16 {
				for _, k := range f.keys {
					if bytes.Equal(k, key) {
						return fmt.Errorf("%w: %q", ErrDuplicateKey, key)
					}
				}
				f.keys = append(f.keys, key)
				continue
			}
			if f.set == nil {
				f.set = make(map[string]bool, 32)
				for _, k := range f.keys {
					f.set[string(k)] = true
				}
			}
			if f.set[string(key)] {
				return fmt.Errorf("%w: %q", ErrDuplicateKey, key)
			}
			f.set[string(key)] = true
		}
	}
	return nil
}
