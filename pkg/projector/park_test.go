package projector_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

type noted struct {
	N    int  `json:"n"`
	Fail bool `json:"fail"`
}

// notesProjection logs every applied event in order; a trigger refuses subjects in
// the blocked table (a statement that fails), and events marked fail make the
// handler return an error while failHandler is set (a handler bug, fixed by
// clearing it).
func notesProjection(t *testing.T, f *fixture, failHandler *atomic.Bool) *readmodel.Projection {
	t.Helper()
	reg := events.NewRegistry()
	events.Register[noted](reg, "Noted")
	p, err := readmodel.New(f.projectionName(), 1, reg)
	if err != nil {
		t.Fatal(err)
	}
	p.Migrate(
		`CREATE TABLE log (pos bigserial PRIMARY KEY, subject text NOT NULL, seq bigint NOT NULL, n int NOT NULL)`,
		`CREATE TABLE blocked (subject text PRIMARY KEY)`,
		`CREATE FUNCTION refuse_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN
		   IF EXISTS (SELECT 1 FROM blocked WHERE subject = NEW.subject) THEN
		     RAISE EXCEPTION 'subject % is blocked', NEW.subject;
		   END IF;
		   RETURN NEW;
		 END $$`,
		`CREATE TRIGGER refuse_blocked BEFORE INSERT ON log FOR EACH ROW EXECUTE FUNCTION refuse_blocked()`,
	)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v noted) error {
		if v.Fail && failHandler.Load() {
			return errors.New("cannot handle this note")
		}
		w.Exec(`INSERT INTO log (subject, seq, n) VALUES ($1, $2, $3)`, e.Subject, int64(e.Sequence), v.N)
		return nil
	})
	return p
}

func note(t *testing.T, subject string, seq uint64, fail bool) events.Event {
	t.Helper()
	data := fmt.Sprintf(`{"n":%d,"fail":%v}`, seq, fail)
	return events.Event{ID: fmt.Sprintf("%s-%d", subject, seq), Source: "t", Type: "Noted", Subject: subject,
		Sequence: seq, Data: []byte(data)}
}

// appliedSeqs returns each subject's applied sequences in the order they were applied.
func appliedSeqs(t *testing.T, f *fixture, p *readmodel.Projection) map[string][]int64 {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT subject, seq FROM `+p.Schema()+`.log ORDER BY pos`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]int64{}
	for rows.Next() {
		var s string
		var q int64
		if err := rows.Scan(&s, &q); err != nil {
			t.Fatal(err)
		}
		out[s] = append(out[s], q)
	}
	return out
}

func seqs(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func equal(a, b []int64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestPoisonParksItsAggregateOnlyAndRetryDrainsInOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3)
	var failHandler atomic.Bool
	failHandler.Store(true)
	p := notesProjection(t, f, &failHandler)
	dlq := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version())

	var evs []events.Event
	for seq := uint64(1); seq <= 5; seq++ {
		evs = append(evs, note(t, "a", seq, false), note(t, "b", seq, false), note(t, "c", seq, seq == 3))
	}
	cfg := f.config(p)
	r, err := projector.New(cfg) // set the schema up before blocking b
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO `+p.Schema()+`.blocked VALUES ('b')`); err != nil {
		t.Fatal(err)
	}
	f.publish(evs...)
	// d's first event cannot be decoded (its data is not JSON); written raw, as a
	// foreign client might.
	w := &kafka.Writer{Addr: kafka.TCP(testenv.Kafka(t)...), Topic: f.topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: testenv.Transport(t)}
	err = w.WriteMessages(context.Background(), kafka.Message{Key: []byte("d"), Value: []byte("{not json"), Headers: []kafka.Header{
		{Key: "ce_id", Value: []byte("d-1")}, {Key: "ce_source", Value: []byte("t")}, {Key: "ce_type", Value: []byte("Noted")},
		{Key: "ce_subject", Value: []byte("d")}, {Key: "ce_sequence", Value: []byte("1")}, {Key: "content-type", Value: []byte("application/json")}}})
	_ = w.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.publish(note(t, "d", 2, false))

	f.start(cfg)
	f.waitCaughtUp(p, time.Minute)

	got := appliedSeqs(t, f, p)
	if !equal(got["a"], seqs(1, 5)) || len(got["b"]) != 0 || !equal(got["c"], seqs(1, 2)) || len(got["d"]) != 0 {
		t.Fatalf("applied %v: want a 1-5, b none, c 1-2, d none", got)
	}
	parked, err := dlq.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	bySubject := map[string][]admin.Parked{}
	for _, pk := range parked {
		bySubject[pk.Subject] = append(bySubject[pk.Subject], pk)
	}
	if len(bySubject["b"]) != 5 || len(bySubject["c"]) != 3 || len(bySubject["d"]) != 2 {
		t.Fatalf("parked %v", bySubject)
	}
	if e := bySubject["b"][0].Error; !strings.Contains(e, "subject b is blocked") {
		t.Errorf("b's first parked error %q does not say why", e)
	}
	if e := bySubject["c"][0].Error; !strings.Contains(e, "cannot handle this note") || bySubject["c"][0].Offset < 0 {
		t.Errorf("c's parked error %q", e)
	}
	if e := bySubject["d"][0].Error; !strings.Contains(e, "undecodable") {
		t.Errorf("d's parked error %q", e)
	}
	if bySubject["b"][1].Behind == nil || *bySubject["b"][1].Behind != bySubject["b"][0].Offset {
		t.Errorf("b's second parked event is not behind its first: %+v", bySubject["b"][1])
	}

	// The fix: unblock b and deploy a handler that copes; then retry.
	if _, err := f.pool.Exec(context.Background(), `DELETE FROM `+p.Schema()+`.blocked`); err != nil {
		t.Fatal(err)
	}
	failHandler.Store(false)
	n, err := dlq.RequestRetry(context.Background(), nil)
	if err != nil || n != 10 {
		t.Fatalf("retry marked %d (%v), want 10", n, err)
	}
	testenv.WaitFor(t, 30*time.Second, "retries to settle", func() bool {
		ps, err := dlq.List(context.Background(), false)
		if err != nil {
			return false
		}
		for _, pk := range ps {
			if pk.State == "retry" {
				return false
			}
		}
		return len(ps) == 2 // d's undecodable event and the one behind it stay parked
	})
	got = appliedSeqs(t, f, p)
	if !equal(got["b"], seqs(1, 5)) || !equal(got["c"], seqs(1, 5)) || len(got["d"]) != 0 {
		t.Fatalf("after retry applied %v: want b and c 1-5 in order, d none", got)
	}
	// b is no longer parked: its next event applies live.
	f.publish(note(t, "b", 6, false))
	f.waitCaughtUp(p, 30*time.Second)
	if got = appliedSeqs(t, f, p); !equal(got["b"], seqs(1, 6)) {
		t.Fatalf("b after retry and a new event: %v", got["b"])
	}
}

// A statement that PostgreSQL refuses at prepare time (an unknown column) in the
// middle of a batch: the events before it in the batch keep their writes, it parks.
func TestStatementFailingAtPrepareParksOnlyItsEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	reg := events.NewRegistry()
	events.Register[noted](reg, "Noted")
	p, err := readmodel.New(f.projectionName(), 1, reg)
	if err != nil {
		t.Fatal(err)
	}
	p.Migrate(`CREATE TABLE log (pos bigserial PRIMARY KEY, subject text NOT NULL, seq bigint NOT NULL, n int NOT NULL)`)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v noted) error {
		if v.Fail {
			w.Exec(`UPDATE log SET no_such_column = 1 WHERE subject = $1`, e.Subject)
		}
		w.Exec(`INSERT INTO log (subject, seq, n) VALUES ($1, $2, $3)`, e.Subject, int64(e.Sequence), v.N)
		return nil
	})
	f.publish(note(t, "a", 1, false), note(t, "b", 1, true), note(t, "a", 2, false), note(t, "c", 1, false), note(t, "b", 2, false))
	f.start(f.config(p))
	f.waitCaughtUp(p, time.Minute)
	got := appliedSeqs(t, f, p)
	if !equal(got["a"], seqs(1, 2)) || !equal(got["c"], seqs(1, 1)) || len(got["b"]) != 0 {
		t.Fatalf("applied %v: want a 1-2 and c 1 kept, b parked", got)
	}
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
	if err != nil || len(parked) != 2 || !strings.Contains(parked[0].Error, "no_such_column") {
		t.Fatalf("parked %+v %v", parked, err)
	}
}
