package projector_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
)

// Found by the reliability suite (scenario 9): an event whose subject (ce_subject, or
// the key when it has none) or id is not valid UTF-8 stopped the whole runner with
// "invalid byte sequence for encoding UTF8", because the batch's lookup of sequence
// marks sent it to PostgreSQL as text. It must park like any other poison.
func TestSubjectOrIDWithInvalidUTF8ParksAndTheRunnerGoesOn(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	var failHandler atomic.Bool
	p := notesProjection(t, f, &failHandler)
	cfg := f.config(p)
	w := &kafka.Writer{Addr: kafka.TCP(testenv.Kafka(t)...), Topic: f.topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: testenv.Transport(t)}
	msg := func(key, id, subject, seq string) kafka.Message {
		h := []kafka.Header{{Key: "ce_id", Value: []byte(id)}, {Key: "ce_source", Value: []byte("t")}, {Key: "ce_type", Value: []byte("Noted")},
			{Key: "content-type", Value: []byte("application/json")}}
		if subject != "" {
			h = append(h, kafka.Header{Key: "ce_subject", Value: []byte(subject)})
		}
		if seq != "" {
			h = append(h, kafka.Header{Key: "ce_sequence", Value: []byte(seq)})
		}
		return kafka.Message{Key: []byte(key), Value: []byte(`{"n":1}`), Headers: h}
	}
	err := w.WriteMessages(context.Background(),
		msg("s1", "bad-subject", "s\xff1", "1"), // subject header not UTF-8
		msg("s\xfe2", "bad-key", "", "1"),       // no subject: the key, not UTF-8
		msg("s3", "bad\xffid", "s3", ""),        // no sequence: deduplicated by an id that is not UTF-8
	)
	_ = w.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.publish(note(t, "ok", 1, false), note(t, "ok", 2, false))
	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)
	if got := appliedSeqs(t, f, p); !equal(got["ok"], seqs(1, 2)) {
		t.Fatalf("applied %v: want ok 1-2", got)
	}
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 3 {
		t.Fatalf("%d parked, want the 3 bad events: %+v", len(parked), parked)
	}
}
