package lane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// Envelope is one message read as an event, its personal fields decrypted (or
// redacted when the subject is forgotten).
type Envelope struct {
	Event   events.Event
	Problem error // undecodable or unreadable personal data: park it
}

// ReadEnvelopes reads msgs as events and opens the personal data of those wants
// says the reader will use (others stay sealed, for the unknown-type policy), with
// one key store lookup for the batch. The error is the key store's (transient: retry
// the batch); permanent problems are per event. A SubjectForgotten in the batch
// evicts its subject's keys before anything is opened, so no event of the batch
// reads a forgotten subject's data from the cache.
func (env *Env) ReadEnvelopes(ctx context.Context, reg *events.Registry, msgs []kafka.Message, wants func(string) bool) ([]Envelope, error) {
	return env.ReadEnvelopesInto(ctx, reg, msgs, wants, nil)
}

// ReadEnvelopesInto is ReadEnvelopes into buf's array when it holds len(msgs)
// (what it held is overwritten): a caller reading batch after batch reuses one.
func (env *Env) ReadEnvelopesInto(ctx context.Context, reg *events.Registry, msgs []kafka.Message, wants func(string) bool, buf []Envelope) ([]Envelope, error) {
	out := slices.Grow(buf[:0], len(msgs))[:len(msgs)]
	var keyIDs []string // the sealed events' keys, each once
	seen := map[string]bool{}
	for i, m := range msgs {
		ev, err := eventlog.FromMessage(m)
		out[i] = Envelope{Event: ev, Problem: err}
		if err == nil && ev.Type == shred.TypeSubjectForgotten && env.Keys != nil {
			env.Keys.Evict(ev.Subject)
		}
		if err == nil && ev.Encrypted() && wants(ev.Type) && !seen[ev.KeyID] {
			seen[ev.KeyID] = true
			keyIDs = append(keyIDs, ev.KeyID)
		}
	}
	if len(keyIDs) == 0 {
		return out, nil
	}
	keys := env.Keys
	var known map[string]shred.Key
	if keys != nil {
		var err error
		if known, err = keys.Lookup(ctx, keyIDs); err != nil {
			return nil, fmt.Errorf("personal data keys: %w", err)
		}
	}
	for i := range out {
		e := &out[i]
		if e.Problem != nil || !e.Event.Encrypted() || !wants(e.Event.Type) {
			continue
		}
		if keys == nil {
			e.Problem = fmt.Errorf("encrypted personal data (%s, key %s) but no key store is configured: start with the master key", e.Event.Encryption, e.Event.KeyID)
			continue
		}
		if err := shred.Open(ctx, keys, known, &e.Event); err != nil {
			var pe *shred.Error
			if !errors.As(err, &pe) {
				return nil, fmt.Errorf("personal data keys: %w", err)
			}
			e.Problem = err
			continue
		}
		redactAll(reg, &e.Event)
	}
	return out, nil
}

// redactAll puts shred.Redacted in every personal field of the event's type that
// holds a value, for an event whose subject is forgotten (Open redacted some of its
// fields): a field the producer left out of encryptedfields must not survive the
// forgetting either.
func redactAll(reg *events.Registry, e *events.Event) {
	pd, ok := reg.PersonalData(e.Type)
	if !ok || len(e.Redacted) == 0 {
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(e.Data, &obj) != nil {
		return
	}
	marker, _ := json.Marshal(shred.Redacted)
	var all []string
	for k, raw := range obj {
		for _, f := range pd.Fields {
			if strings.EqualFold(k, f) && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				obj[k] = marker
				all = append(all, f)
			}
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // as shred.Open writes the data: a handler sees the same text
	if enc.Encode(obj) == nil {
		e.Data, e.Redacted = bytes.TrimRight(b.Bytes(), "\n"), all
	}
}

// WithoutPersonal returns s with the event's personal field values (decrypted ones)
// replaced by a marker: error texts that are parked or logged — a mail server
// refusing an address, a database rejecting a value — must not keep plaintext that a
// forgetting could never reach.
func WithoutPersonal(reg *events.Registry, ev events.Event, s string) string {
	pd, ok := reg.PersonalData(ev.Type)
	if !ok || len(ev.Data) == 0 {
		return s
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(ev.Data, &obj) != nil {
		return s
	}
	for _, f := range pd.Fields {
		var v string
		if json.Unmarshal(obj[f], &v) != nil || len(v) < 2 || v == shred.Redacted {
			continue
		}
		// Case-insensitively: a server may echo an address lowercased.
		s = regexp.MustCompile(`(?i)`+regexp.QuoteMeta(v)).ReplaceAllLiteralString(s, "[personal data: "+f+"]")
	}
	return s
}
