package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/events"
)

// event builds one example-domain event on subject with sequence seq.
func event(subject string, seq uint64, typ string, data any) events.Event {
	b, _ := json.Marshal(data)
	return events.Event{ID: uuid.NewString(), Source: "chaos", Type: typ, Subject: subject, Time: time.Now().UTC(),
		Sequence: seq, Data: b}
}

func registered(subject, domainName string) events.Event {
	return event(subject, 1, domain.TypeUserRegistered, domain.UserRegistered{UserID: subject, Name: "Ann " + subject,
		Email: "ann." + subject + "@" + domainName + ".example.test"})
}

func passwordChanged(subject string, seq uint64) events.Event {
	return event(subject, seq, domain.TypeUserChangedPassword, domain.UserChangedPassword{UserID: subject, PasswordHash: fmt.Sprint("h", seq)})
}

// 8. The same event written twice (a retried write), and aggregates whose
// sequences have a gap or a swap, under --gaps halt: duplicates apply once, gaps and
// swaps park their aggregate (never a silent drop).
func duplicatesGapsSwaps(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	var sent []events.Event
	for range t.P.Events / 2000 {
		batch := make([]events.Event, 2000)
		for i := range batch {
			batch[i] = g.Next()
		}
		if _, err := t.Publish(ctx, batch...); err != nil {
			return Expect{}, err
		}
		sent = append(sent, batch...)
	}
	p, err := t.StartProjector(ctx, "--gaps", "halt")
	if err != nil {
		return Expect{}, err
	}
	// Retried writes: 300 events already written (registrations among them), again.
	again := make([]events.Event, 0, 300)
	for range 300 {
		again = append(again, sent[t.Rng.IntN(len(sent))])
	}
	if _, err := t.Publish(ctx, again...); err != nil {
		return Expect{}, err
	}
	// Gaps and swaps, each on an aggregate of its own.
	parked := map[string]bool{}
	var odd []events.Event
	for i := range 10 {
		s := fmt.Sprintf("%sgap%d", t.Name, i)
		odd = append(odd, registered(s, t.Name), passwordChanged(s, 2), passwordChanged(s, 4), passwordChanged(s, 5))
		parked[s] = true
		s = fmt.Sprintf("%sswap%d", t.Name, i)
		odd = append(odd, registered(s, t.Name), passwordChanged(s, 2), passwordChanged(s, 4), passwordChanged(s, 3), passwordChanged(s, 5))
		parked[s] = true
	}
	for _, e := range odd {
		if _, err := t.Publish(ctx, e); err != nil { // one at a time: in order within the aggregate
			return Expect{}, err
		}
	}
	if err := t.PublishGenerated(ctx, g, 2000); err != nil {
		return Expect{}, err
	}
	t.R.Note("%d events re-written with their ids; 10 aggregates with a gap (1,2,4,5), 10 with a swap (1,2,4,3,5)", len(again))
	return Expect{Effects: true, ParkedSubjects: parked, MustParkSubjects: parked}, t.settle(ctx, p)
}

// poison is one bad message and what its parking reason must say.
type poison struct {
	what   string
	reason string // a word the parked error must contain (lower case)
	msg    kafka.Message
}

func header(m *kafka.Message, k, v string) {
	for i := range m.Headers {
		if m.Headers[i].Key == k {
			m.Headers[i].Value = []byte(v)
			return
		}
	}
	m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
}

// rawMessage encodes a valid event, for the caller to spoil.
func rawMessage(e events.Event) kafka.Message {
	rec, err := events.Encode(e)
	if err != nil {
		panic(err)
	}
	m := kafka.Message{Key: rec.Key, Value: rec.Value}
	for _, h := range rec.Headers {
		m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	return m
}

// 9. Poison and malformed input: each parked with a clear reason, its aggregate
// behind it, every other aggregate applied; no stall, no U+FFFD.
func poisonInput(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events/2); err != nil {
		return Expect{}, err
	}
	p, err := t.StartProjector(ctx, "--unknown-types", "park")
	if err != nil {
		return Expect{}, err
	}
	subj := func(i int) string { return t.Name + "poison" + strconv.Itoa(i) }
	ps := poisons(t, subj)

	// A transport of the writer's own (kafka-go's DefaultTransport would keep its pools
	// for the life of the process), closed after the writer, which leaves it open.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(t.S.Kafka.Brokers()...), Topic: t.Topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchBytes: 4 << 20, BatchTimeout: time.Millisecond, MaxAttempts: 3, Transport: tr}
	defer func() { _ = w.Close() }()
	expectParked := map[string]bool{}
	reasons := map[string]poison{}
	for i, pz := range ps {
		// The poison, then a valid event of the same aggregate (parked behind it).
		follow := rawMessage(passwordChanged(subj(i), 2))
		follow.Key = pz.msg.Key
		if err := w.WriteMessages(ctx, pz.msg, follow); err != nil {
			return Expect{}, fmt.Errorf("write %s: %w", pz.what, err)
		}
		t.Hist.Record(Attempt{EventID: "poison:" + pz.what, Subject: subj(i), Outcome: Unknown, Offset: -1, At: time.Now()})
		// It parks under its subject (ce_subject, else the key), as PostgreSQL text
		// can hold it; the follower parks behind it when they share the subject.
		s := string(pz.msg.Key)
		for _, h := range pz.msg.Headers {
			if h.Key == "ce_subject" {
				s = string(h.Value)
			}
		}
		s = strings.ToValidUTF8(s, "\uFFFD")
		expectParked[s] = true
		reasons[s] = pz
	}
	// A valid message near the broker's limit (message.max.bytes ~1 MiB): applied.
	big := t.Name + "big"
	body := strings.Repeat("long article ", 990_000/13)
	if _, err := t.Publish(ctx, registered(big, t.Name), event(big, 2, domain.TypeUserPublishedAnArticle,
		domain.UserPublishedAnArticle{UserID: big, ArticleID: big + "-a1", Title: "Big", Body: body})); err != nil {
		return Expect{}, fmt.Errorf("the near-limit message: %w", err)
	}
	if err := t.PublishGenerated(ctx, g, t.P.Events/2); err != nil {
		return Expect{}, err
	}
	t.R.Note("%d poison messages (%s), each followed by a valid event of its aggregate; a valid %d KiB event near the broker's limit",
		len(ps), whats(ps), (len(body)+200)>>10)
	exp := Expect{Effects: true, ParkedSubjects: expectParked, MustParkSubjects: expectParked}
	exp.Extra = func(obs Observed) []Check { return poisonChecks(obs, ps, reasons, big) }
	return exp, t.settle(ctx, p)
}

// poisons returns the poison messages poisonInput writes, one per subject i.
func poisons(t *T, subj func(int) string) []poison {
	var ps []poison
	reg := func(i int) kafka.Message { return rawMessage(registered(subj(i), t.Name)) }
	add := func(what, reason string, m kafka.Message) { ps = append(ps, poison{what, reason, m}) }
	m := reg(0)
	m.Value = []byte(`{"user_id": "` + subj(0) + `", "email": `)
	add("bad JSON", "json", m)
	m = reg(1)
	m.Value = []byte(`{"user_id":"` + subj(1) + `","email":"x@` + t.Name + `.example.test","name":"Ren` + "\xe9" + `e"}`)
	add("invalid UTF-8", "utf-8", m)
	m = reg(2)
	m.Value = []byte(`{"user_id":"` + subj(2) + `","email":"x@` + t.Name + `.example.test","name":"a\u0000b"}`)
	add("NUL character (escaped)", "nul", m)
	m = reg(3)
	m.Value = []byte("{\"user_id\":\"" + subj(3) + "\",\"email\":\"x@" + t.Name + ".example.test\",\"name\":\"a\x00b\"}")
	add("NUL character (raw)", "nul", m)
	m = reg(4)
	header(&m, "ce_type", "UserTeleported")
	add("unknown type", "unknown", m)
	m = reg(5)
	header(&m, "ce_schemaversion", "99")
	add("schema version from the future", "schema", m)
	m = kafka.Message{Key: []byte(subj(6))}
	add("null value, no headers", "", m)
	m = reg(7)
	m.Value = nil
	add("null value with headers", "missing", m)
	m = reg(8)
	m.Value = []byte(`{"user_id":"` + subj(8) + `","email":"x@` + t.Name + `.example.test","name":"First","name":"Second"}`)
	add("duplicate JSON keys", "duplicate", m)
	m = reg(9)
	header(&m, "ce_subject", "bad\xffsubject")
	add("invalid UTF-8 in an attribute", "utf-8", m)

	return ps
}

// poisonChecks checks that every poison parked, saying why, and that the near-limit
// event was applied.
func poisonChecks(obs Observed, ps []poison, reasons map[string]poison, big string) []Check {
	var bad []string
	seen := map[string]bool{}
	for _, r := range obs.Parked {
		pz, ok := reasons[r.Subject]
		if !ok || strings.Contains(r.Error, "behind parked") {
			continue
		}
		seen[r.Subject] = true
		if !strings.Contains(strings.ToLower(r.Error), pz.reason) {
			bad = append(bad, fmt.Sprintf("%s parked as %q (want it to say %q)", pz.what, r.Error, pz.reason))
		}
	}
	for s, pz := range reasons {
		if !seen[s] {
			bad = append(bad, pz.what+" not parked")
		}
	}
	_, bigApplied := obs.ReadModel.Articles[big+"-a1"]
	if !bigApplied {
		bad = append(bad, "the near-limit event was not applied")
	}
	return []Check{{"poison parked with a clear reason", len(bad) == 0,
		fmt.Sprintf("%d kinds of poison; near-limit event applied: %v%s", len(ps), bigApplied, examples(bad))}}
}

func whats(ps []poison) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.what)
	}
	return strings.Join(s, ", ")
}
