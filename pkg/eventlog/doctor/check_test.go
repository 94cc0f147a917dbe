package doctor

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

var t0 = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

func event(subject string, seq uint64) events.Event {
	return events.Event{
		ID: events.NewID(), Source: "users-api", Type: domain.TypeUserChangedPassword, Subject: subject, Time: t0,
		DataContentType: events.ContentTypeJSON, Sequence: seq, SchemaVersion: 1,
		Data: json.RawMessage(fmt.Sprintf(`{"user_id":%q,"password_hash":"x"}`, subject)),
	}
}

func message(t testing.TB, e events.Event) kafka.Message {
	t.Helper()
	m, err := eventlog.ToMessage(e)
	require.NoError(t, err)
	m.Time = t0
	return m
}

// headers returns a binary-mode record's headers with some replaced (a nil value
// drops the header).
func withHeaders(m kafka.Message, set map[string][]byte) kafka.Message {
	var out []kafka.Header
	for _, h := range m.Headers {
		if v, ok := set[h.Key]; ok {
			if v != nil {
				out = append(out, kafka.Header{Key: h.Key, Value: v})
			}
			delete(set, h.Key)
			continue
		}
		out = append(out, h)
	}
	for k, v := range set {
		out = append(out, kafka.Header{Key: k, Value: v})
	}
	m.Headers = out
	return m
}

// fastVerdict is what the fast path says of a record: accepted or not.
func fastVerdict(m kafka.Message) bool {
	var a attrs
	a.readHeaders(m.Headers)
	return !a.structured() && a.binaryOK(m.Key, m.Value, true)
}

// The fast path must accept exactly what events.Decode accepts (in binary mode;
// structured records always go to the decoder).
func TestFastPathAgreesWithDecode(t *testing.T) {
	t.Parallel()
	good := message(t, event("user-1", 3))
	cases := map[string]kafka.Message{
		"good":                      good,
		"no id":                     withHeaders(good, map[string][]byte{"ce_id": nil}),
		"blank id":                  withHeaders(good, map[string][]byte{"ce_id": []byte(" \t")}),
		"no source":                 withHeaders(good, map[string][]byte{"ce_source": nil}),
		"no type":                   withHeaders(good, map[string][]byte{"ce_type": nil}),
		"no subject, key stands in": withHeaders(good, map[string][]byte{"ce_subject": nil}),
		"NUL in id":                 withHeaders(good, map[string][]byte{"ce_id": []byte("a\x00b")}),
		"bad UTF-8 in source":       withHeaders(good, map[string][]byte{"ce_source": []byte("a\xffb")}),
		"bad UTF-8 in traceparent":  withHeaders(good, map[string][]byte{"ce_traceparent": []byte("\xc3")}),
		"NUL in content-type":       withHeaders(good, map[string][]byte{"content-type": []byte("application/json\x00")}),
		"specversion 0.3":           withHeaders(good, map[string][]byte{"ce_specversion": []byte("0.3")}),
		"empty specversion":         withHeaders(good, map[string][]byte{"ce_specversion": []byte("")}),
		"bad time":                  withHeaders(good, map[string][]byte{"ce_time": []byte("yesterday")}),
		"sequence -1":               withHeaders(good, map[string][]byte{"ce_sequence": []byte("-1")}),
		"sequence +1":               withHeaders(good, map[string][]byte{"ce_sequence": []byte("+1")}),
		"sequence 007":              withHeaders(good, map[string][]byte{"ce_sequence": []byte("007")}),
		"sequence overflows":        withHeaders(good, map[string][]byte{"ce_sequence": []byte("18446744073709551616")}),
		"sequence max":              withHeaders(good, map[string][]byte{"ce_sequence": []byte("18446744073709551615")}),
		"schemaversion 0":           withHeaders(good, map[string][]byte{"ce_schemaversion": []byte("0")}),
		"schemaversion +2":          withHeaders(good, map[string][]byte{"ce_schemaversion": []byte("+2")}),
		"schemaversion -2":          withHeaders(good, map[string][]byte{"ce_schemaversion": []byte("-2")}),
		"schemaversion x":           withHeaders(good, map[string][]byte{"ce_schemaversion": []byte("x")}),
		"schemaversion huge":        withHeaders(good, map[string][]byte{"ce_schemaversion": []byte("9223372036854775808")}),
		"encryption without key":    withHeaders(good, map[string][]byte{"ce_encryption": []byte("aes-256-gcm")}),
		"encryption complete":       withHeaders(good, map[string][]byte{"ce_encryption": []byte("aes-256-gcm"), "ce_keyid": []byte("k1"), "ce_encryptedfields": []byte("email")}),
		"encrypted field empty":     withHeaders(good, map[string][]byte{"ce_encryption": []byte("aes-256-gcm"), "ce_keyid": []byte("k1"), "ce_encryptedfields": []byte("email,")}),
		"key id with space":         withHeaders(good, map[string][]byte{"ce_encryption": []byte("aes-256-gcm"), "ce_keyid": []byte("k 1"), "ce_encryptedfields": []byte("email")}),
		"upper-case header names":   withHeaders(good, map[string][]byte{"ce_id": nil, "CE_ID": []byte("x-1"), "Content-Type": []byte("application/json")}),
		"Kelvin sign in a name":     withHeaders(good, map[string][]byte{"ce_keyid": nil, "ce_\u212aeyid": []byte("k1")}),
		"text data":                 withHeaders(good, map[string][]byte{"content-type": []byte("text/plain")}),
		"JSON suffix type":          withHeaders(good, map[string][]byte{"content-type": []byte("application/vnd.x+JSON; charset=utf-8")}),
		"empty content-type":        withHeaders(good, map[string][]byte{"content-type": []byte("")}),
	}
	badData := map[string]string{
		"invalid JSON": `{"user_id":`, "NUL escaped": `{"a":"\u0000"}`, "bad UTF-8": "{\"a\":\"\xff\"}",
		"duplicate member": `{"a":1,"a":2}`, "not an object": `[1,2]`, "empty": ``,
	}
	for name, v := range badData {
		m := good
		m.Value = []byte(v)
		cases["data: "+name] = m
		tm := withHeaders(good, map[string][]byte{"content-type": []byte("text/plain")})
		tm.Value = []byte(v)
		cases["text data: "+name] = tm
	}
	noKey := withHeaders(good, map[string][]byte{"ce_subject": nil})
	noKey.Key = nil
	cases["no subject, no key"] = noKey
	for name, m := range cases {
		_, err := eventlog.FromMessage(m)
		require.Equal(t, err == nil, fastVerdict(m), "%s: decoder says %v", name, err)
	}
}

// FuzzFastPathAgreesWithDecode mutates attribute values and the data.
func FuzzFastPathAgreesWithDecode(f *testing.F) {
	f.Add("id-1", "src", "T", "s-1", "2026-01-01T00:00:00Z", "1", "1", "application/json", "", "", "", `{"a":1}`)
	f.Add(" ", "src", "T", "", "x", "-1", "0", "text/plain", "aes-256-gcm", "k", "a,b", `{"a":1,"a":2}`)
	f.Add("i", "s", "t", "u", "", "", "+3", "application/cloudevents+json", "", "k", "", "")
	f.Fuzz(func(t *testing.T, id, source, typ, subject, tm, seq, schema, ct, enc, keyID, fields, data string) {
		var hs []kafka.Header
		for k, v := range map[string]string{"ce_id": id, "ce_source": source, "ce_type": typ, "ce_subject": subject,
			"ce_time": tm, "ce_sequence": seq, "ce_schemaversion": schema, "content-type": ct,
			"ce_encryption": enc, "ce_keyid": keyID, "ce_encryptedfields": fields} {
			if v != "" {
				hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
			}
		}
		m := kafka.Message{Key: []byte("key"), Value: []byte(data), Headers: hs}
		var a attrs
		a.readHeaders(m.Headers)
		if a.structured() {
			return
		}
		_, err := eventlog.FromMessage(m)
		if (err == nil) != fastVerdict(m) {
			t.Fatalf("decoder says %v, fast path %v", err, fastVerdict(m))
		}
	})
}

func TestIDSet(t *testing.T) {
	t.Parallel()
	s := newIDSet(1000)
	require.Equal(t, int64(2048*8), s.bytes())
	seed := maphash.MakeSeed()
	for i := range 1000 {
		require.False(t, s.add(maphash.String(seed, fmt.Sprint(i))), i)
	}
	for i := range 1000 {
		require.True(t, s.add(maphash.String(seed, fmt.Sprint(i))), i)
	}
	require.False(t, s.add(0))
	require.True(t, s.add(0))
	require.Equal(t, int64(1<<24*8), newIDSet(10_000_000).bytes(), "10 M ids in 128 MiB")
}

func TestParseOffsets(t *testing.T) {
	t.Parallel()
	o, err := ParseOffsets("120, 3:40,0:7")
	require.NoError(t, err)
	for p, want := range map[int]int64{0: 7, 1: 120, 3: 40} {
		got, ok := o.For(p)
		require.True(t, ok)
		require.Equal(t, want, got, p)
	}
	require.Equal(t, "120,0:7,3:40", o.String())
	o, err = ParseOffsets("")
	require.NoError(t, err)
	require.True(t, o.IsZero())
	for in, want := range map[string]string{
		"-1": "not a non-negative", "x": "not a non-negative", "a:1": "not a partition number",
		"1:2,1:3": "given twice", "1,2": "two offsets", "1:": "not a non-negative",
	} {
		_, err := ParseOffsets(in)
		require.ErrorContains(t, err, want, in)
	}
}

// harness runs a checker over messages of one partition without Kafka.
type harness struct {
	s *scan
	c *checker
	n int64
}

func newHarness(part int, partitions int, fromStart bool, reg *events.Registry) *harness {
	first := make([]time.Time, partitions)
	for i := range first {
		first[i] = t0.Add(-time.Hour)
	}
	cfg := Config{Registry: reg}.withDefaults()
	s := &scan{cfg: cfg, layout: eventlog.NewLayout(first), ids: newIDSet(1 << 12), seed: maphash.MakeSeed(),
		personal: personalTypes(reg)}
	return &harness{s: s, c: s.newChecker(&partRange{part: part, fromStart: fromStart})}
}

func (h *harness) feed(t testing.TB, ms ...kafka.Message) {
	for _, m := range ms {
		m.Offset = h.n
		m.Partition = h.c.r.part
		h.n++
		h.c.check(&m)
	}
}

func (h *harness) report() *Report {
	h.c.finish()
	rep := &Report{Counts: map[Kind]int64{}}
	h.s.merge(rep, []*checker{h.c})
	rep.sortFindings()
	return rep
}

func kinds(rep *Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, fmt.Sprintf("%s@%d", f.Kind, f.Offset))
	}
	return out
}

func TestSequencesGapsSwapsStaleAndDuplicates(t *testing.T) {
	t.Parallel()
	one := func(seq uint64) events.Event { return event("user-1", seq) }
	retried := one(4)
	reused := one(5)
	reusedOther := one(6)
	reusedOther.ID = reused.ID
	for _, c := range []struct {
		name      string
		fromStart bool
		evs       []events.Event
		want      []string
	}{
		{"in order", true, []events.Event{one(1), one(2), one(3)}, nil},
		{"1, 3, 2: a swap, no gap left", true, []events.Event{one(1), one(3), one(2)}, []string{"swap@2"}},
		{"1, 4: a gap of 2 and 3", true, []events.Event{one(1), one(4)}, []string{"gap@1"}},
		{"1, 5, 3: a swap splits the gap", true, []events.Event{one(1), one(5), one(3)}, []string{"gap@1", "gap@1", "swap@2"}},
		{"starts at 3 from the log start", true, []events.Event{one(3), one(4)}, []string{"gap@0"}},
		{"starts at 3 mid-log", false, []events.Event{one(3), one(4)}, nil},
		{"2 again with a new id: stale", true, []events.Event{one(1), one(2), one(2)}, []string{"stale@2"}},
		{"the same event twice: a duplicate", true, []events.Event{one(1), one(2), one(3), retried, retried}, []string{"duplicate@4"}},
		{"an id reused for another sequence", true, []events.Event{one(1), one(2), one(3), one(4), reused, reusedOther}, []string{"duplicate@5"}},
		{"no sequence: only ids", true, []events.Event{one(0), one(0)}, nil},
	} {
		h := newHarness(0, 1, c.fromStart, nil)
		for _, e := range c.evs {
			h.feed(t, message(t, e))
		}
		rep := h.report()
		require.Equal(t, c.want, kinds(rep), c.name)
		for _, f := range rep.Findings {
			switch f.Kind {
			case KindSwap:
				require.Equal(t, []Location{{0, 1}}, f.Also, c.name)
			case KindDuplicate:
				require.Len(t, f.Also, 1, c.name)
				if c.name == "an id reused for another sequence" {
					require.Contains(t, f.Detail, "reused by another event")
				}
			}
		}
	}
}

func TestDuplicateBeyondTheWindowGoesToTheSecondPass(t *testing.T) {
	t.Parallel()
	h := newHarness(0, 1, true, nil)
	first := event("user-1", 1)
	h.feed(t, message(t, first))
	for i := range WindowDefault + 2 {
		h.feed(t, message(t, event("user-1", uint64(i+2))))
	}
	again := first
	again.Sequence = WindowDefault + 3
	h.feed(t, message(t, again))
	h.c.finish()
	rep := &Report{Counts: map[Kind]int64{}}
	unlocated := h.s.merge(rep, []*checker{h.c})
	require.Equal(t, []string{"duplicate@11"}, kinds(rep))
	require.Empty(t, rep.Findings[0].Also)
	require.Len(t, unlocated, 1)
}

func TestMisroutedAndKeyNotSubject(t *testing.T) {
	t.Parallel()
	const n = 6
	var key string // a subject that hashes away from partition 0
	for i := 0; ; i++ {
		key = fmt.Sprintf("user-%d", i)
		if eventlog.Murmur2Partition([]byte(key), n) != 0 {
			break
		}
	}
	h := newHarness(0, n, true, nil)
	m := message(t, event(key, 1))
	h.feed(t, m)
	other := message(t, event("user-x", 1))
	other.Key = []byte("something-else")
	h.feed(t, other)
	keyless := message(t, event(key, 2)) // its subject belongs on another partition
	keyless.Key = nil
	h.feed(t, keyless)
	var home string // a subject that hashes to partition 0: harmless without a key
	for i := 0; ; i++ {
		if home = fmt.Sprintf("home-%d", i); eventlog.Murmur2Partition([]byte(home), n) == 0 {
			break
		}
	}
	harmless := message(t, event(home, 1))
	harmless.Key = nil
	h.feed(t, harmless)
	rep := h.report()
	var got []Kind
	for _, f := range rep.Findings {
		got = append(got, f.Kind)
		if f.Kind == KindMisrouted && f.Subject == key {
			require.Equal(t, eventlog.Murmur2Partition([]byte(key), n), *f.Expected)
			require.Contains(t, f.Detail, "hashes to partition")
			require.Contains(t, Advice[KindMisrouted], "partitioner=murmur2_random")
		}
	}
	require.Equal(t, []string{"misrouted@0", "key-not-subject@1", "key-not-subject@2"}, kinds(rep))
	require.Contains(t, rep.Findings[2].Detail, "no key, and subject")
	require.Equal(t, []Kind{KindMisrouted, KindKeyNotSubject, KindKeyNotSubject}, got)
}

func TestUndecodableAndMissingAttributes(t *testing.T) {
	t.Parallel()
	h := newHarness(0, 1, true, nil)
	good := message(t, event("user-1", 1))
	h.feed(t,
		withHeaders(good, map[string][]byte{"ce_type": nil}),
		withHeaders(good, map[string][]byte{"ce_time": []byte("soon")}),
	)
	bad := message(t, event("user-1", 2))
	bad.Value = []byte(`{"user_id":"user-1",`)
	h.feed(t, bad)
	rep := h.report()
	require.Equal(t, []string{"undecodable@1", "undecodable@2", "missing-attribute@0"}, kinds(rep))
	require.Equal(t, "type", rep.Findings[2].Field)
	require.Contains(t, rep.Findings[0].Detail, "time")
	require.Contains(t, rep.Findings[1].Detail, "invalid JSON")
}

func TestPlaintextPersonalData(t *testing.T) {
	t.Parallel()
	reg := domain.Registry()
	h := newHarness(0, 1, true, reg)
	reg1 := func(data string, enc ...string) kafka.Message {
		e := event("user-1", 0)
		e.ID, e.Type, e.Data = events.NewID(), domain.TypeUserRegistered, json.RawMessage(data)
		if len(enc) > 0 {
			e.Encryption, e.KeyID, e.EncryptedFields = "aes-256-gcm", "k1", enc
		}
		return message(t, e)
	}
	h.feed(t,
		reg1(`{"user_id":"user-1","email":"a@example.test","name":"Ada"}`),                 // 0: both plain
		reg1(`{"user_id":"user-1","email":"c2VhbGVk","name":"c2VhbGVk"}`, "email", "name"), // 1: sealed
		reg1(`{"user_id":"user-1","email":"c2VhbGVk","name":"Ada"}`, "email"),              // 2: name left out
		reg1(`{"user_id":"user-1","email":null,"name":""}`),                                // 3: nothing personal
		reg1(`{"user_id":"user-1","Email":"a@example.test"}`),                              // 4: read as email
	)
	rep := h.report()
	var got []string
	for _, f := range rep.Findings {
		got = append(got, fmt.Sprintf("%s %d:%s", f.Kind, f.Offset, f.Field))
	}
	require.Equal(t, []string{"plaintext-personal 0:email,name", "plaintext-personal 2:name", "plaintext-personal 4:Email"}, got)
	require.True(t, strings.Contains(rep.Findings[0].Detail, "no encryption attributes"))
	require.True(t, strings.Contains(rep.Findings[1].Detail, "encryptedfields (email) leave them out"))
}

func TestFindingsAreCappedCountsAreNot(t *testing.T) {
	t.Parallel()
	h := newHarness(0, 1, true, nil)
	h.s.cfg.MaxFindings = 3
	for range 10 {
		h.feed(t, withHeaders(message(t, event("user-1", 1)), map[string][]byte{"ce_source": nil}))
	}
	rep := h.report()
	require.Len(t, rep.Findings, 3)
	require.Equal(t, int64(10), rep.Counts[KindMissingAttribute])
	require.Equal(t, int64(7), rep.Unlisted[KindMissingAttribute])
}
