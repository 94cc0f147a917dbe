package projector_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

// writeTo writes events as they are to one partition each, chosen by pick: a
// producer that does not honour the partitioning contract.
func writeTo(t *testing.T, topic string, pick func(kafka.Message, int) int, msgs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(testenv.Kafka(t)...), Topic: topic, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: testenv.Transport(t),
		Balancer: kafka.BalancerFunc(func(m kafka.Message, parts ...int) int { return pick(m, len(parts)) })}
	defer func() { _ = w.Close() }()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func message(t *testing.T, e events.Event) kafka.Message {
	t.Helper()
	m, err := eventlog.ToMessage(e)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// One aggregate written by two producers that partition differently: the events on
// the partition its key does not hash to are parked, with a reason that names the
// expected partition and the producer setting that fixes it; none is counted as a
// duplicate, and an operator's retry applies them. Records without a key, and keys
// that are empty, NUL or not UTF-8, never stop the runner.
func TestMisroutedEventsParkNamingTheFixAndNoneIsADuplicate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3)
	var never atomic.Bool
	p := notesProjection(t, f, &never)
	wrong := func(m kafka.Message, n int) int { return (eventlog.Murmur2Partition(m.Key, n) + 1) % n }
	f.publish(note(t, "a", 1, false), note(t, "a", 2, false))
	writeTo(t, f.topic, wrong, message(t, note(t, "a", 3, false)))
	f.publish(note(t, "a", 4, false))
	writeTo(t, f.topic, wrong, message(t, note(t, "a", 5, false)))
	f.publish(note(t, "a", 6, false))
	keyless := message(t, note(t, "k", 1, false))
	keyless.Key = nil
	// Keys no text column can hold, on records without ce_subject (the key is the subject).
	rawKey := func(key string) kafka.Message {
		m := message(t, note(t, "x", 1, false))
		m.Key = []byte(key)
		hs := m.Headers[:0]
		for _, h := range m.Headers {
			if h.Key != "ce_subject" {
				hs = append(hs, h)
			}
		}
		m.Headers = hs
		return m
	}
	nul, bad := rawKey("n\x00ul"), rawKey("b\xffad")
	writeTo(t, f.topic, func(m kafka.Message, n int) int {
		if len(m.Key) == 0 {
			return 2
		}
		return eventlog.Murmur2Partition(m.Key, n)
	}, keyless, nul, bad)
	want := eventlog.Murmur2Partition([]byte("a"), 3)

	r, _ := f.start(f.config(p))
	f.waitCaughtUp(p, time.Minute)
	f.waitStatusAtEnd(r, 10*time.Second)
	if got := appliedSeqs(t, f, p); !equal(got["a"], []int64{1, 2, 4, 6}) || !equal(got["k"], []int64{1}) {
		t.Fatalf("applied %v: want a 1, 2, 4, 6 (3 and 5 misrouted) and the keyless k 1", got)
	}
	var dups int64
	for _, ps := range r.Status().Partitions {
		dups += ps.Duplicates
	}
	if dups != 0 {
		t.Fatalf("%d events counted as duplicates; none is one", dups)
	}
	dlq := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version())
	parked, err := dlq.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	var misrouted int
	for _, pk := range parked {
		switch {
		case pk.Subject == "a" && pk.Behind != nil:
			misrouted++ // the aggregate's later events on that partition wait behind it, in order
		case pk.Subject == "a":
			wantReason := fmt.Sprintf("key hashes to partition %d of 3 (murmur2), record is on partition %d", want, (want+1)%3)
			if !strings.Contains(pk.Error, wantReason) || !strings.Contains(pk.Error, "partitioner=murmur2_random") ||
				!strings.Contains(pk.Error, "event a-3") {
				t.Fatalf("misrouted event parked for %q", pk.Error)
			}
			misrouted++
		case strings.HasPrefix(pk.Subject, "n") || strings.HasPrefix(pk.Subject, "b"):
			// NUL and invalid UTF-8 subjects cannot be stored: they park as poison.
		default:
			t.Fatalf("unexpected parked event %+v", pk)
		}
	}
	if misrouted != 2 || len(parked) != 4 {
		t.Fatalf("parked %+v: want a's 3 and 5, and the NUL and non-UTF-8 keys", parked)
	}
	if n, err := dlq.RequestRetry(context.Background(), []string{"a"}); err != nil || n != 2 {
		t.Fatalf("retry: %d %v", n, err)
	}
	testenv.WaitFor(t, 30*time.Second, "the retried events to apply", func() bool {
		return equal(appliedSeqs(t, f, p)["a"], []int64{1, 2, 4, 6, 3, 5})
	})
}
