package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// touched updates two shared rows, First then Second.
type touched struct {
	First  string `json:"first"`
	Second string `json:"second"`
}

// TestStatusReportsDeadlocksAfterTheRunnerStopped: two partitions' batches update
// two shared rows in opposite orders with Exec handlers, each waiting (on its first
// attempt) until the other holds its first row, so that PostgreSQL finds a real
// deadlock (40P01) and the runner retries the victim's batch. The runner counts it
// in its own status, which ends with it; status, run after the runner stopped,
// reads the count stored with the positions and prints it. Without the stored
// count, status said 0.
func TestStatusReportsDeadlocksAfterTheRunnerStopped(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 2)
	pool, schema := testenv.Postgres(t)
	p := deadlockingProjection(t)
	publishOnEachPartition(t, topic, []touched{{First: "a", Second: "b"}, {First: "b", Second: "a"}})

	r, err := projector.New(projector.Config{Brokers: testenv.Kafka(t), Topic: topic, Projection: p, Pool: pool, Schema: schema,
		GroupID: topic, RetryBackoffMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testenv.WaitFor(t, 2*time.Minute, "both events applied", func() bool {
		var n int
		for _, ps := range r.Status().Partitions {
			n += int(ps.Next)
		}
		return n == 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := r.Status().Deadlocks; got != 1 {
		t.Fatalf("the runner counted %d deadlocks, want the 1 the handlers make", got)
	}

	args := []string{"status", "--brokers", strings.Join(testenv.Kafka(t), ","), "--topic", topic, "--database-url", testenv.Get(t).DatabaseURL,
		"--schema", schema, "--projection", p.Name(), "--interval", "0"}
	var out bytes.Buffer
	if err := run(context.Background(), append(args, "--json"), &out, &out); err != nil && !errors.As(err, new(exitCode)) {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	var st projector.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	var onPartitions int64
	for _, ps := range st.Partitions {
		onPartitions += ps.Deadlocks
	}
	if st.Deadlocks != 1 || onPartitions != 1 {
		t.Fatalf("status --json after the runner stopped: %d deadlocks (%d on the partitions), want 1\n%s", st.Deadlocks, onPartitions, out.String())
	}
	out.Reset()
	if err := run(context.Background(), args, &out, &out); err != nil && !errors.As(err, new(exitCode)) {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "1 batches lost to a deadlock (40P01), each retried in halves: 1 on partition ") {
		t.Fatalf("status does not report the deadlock:\n%s", out.String())
	}
}

// deadlockingProjection folds touched events with Exec into two shared rows; an
// event's first attempt waits (up to 30 s) after its first update until another
// event's first attempt has made its own, so that two partitions' transactions
// each hold the row the other wants next.
func deadlockingProjection(t *testing.T) *readmodel.Projection {
	t.Helper()
	reg := events.NewRegistry()
	events.Register[touched](reg, "Touched")
	var b [5]byte
	_, _ = crand.Read(b[:])
	p, err := readmodel.New("d"+hex.EncodeToString(b[:]), 1, reg)
	if err != nil {
		t.Fatal(err)
	}
	p.Migrate(`CREATE TABLE shared (k text PRIMARY KEY, n int NOT NULL)`,
		`INSERT INTO shared VALUES ('a', 0), ('b', 0)`,
		`CREATE SEQUENCE arrivals`, // not transactional: counts the first attempts across rollbacks
		`CREATE FUNCTION touch(first text, second text) RETURNS void LANGUAGE plpgsql AS $$
		 DECLARE deadline timestamptz := clock_timestamp() + interval '30 seconds';
		 BEGIN
		   UPDATE shared SET n = n + 1 WHERE k = first;
		   IF nextval('arrivals') <= 2 THEN
		     WHILE (SELECT last_value FROM arrivals) < 2 AND clock_timestamp() < deadline LOOP
		       PERFORM pg_sleep(0.01);
		     END LOOP;
		   END IF;
		   UPDATE shared SET n = n + 1 WHERE k = second;
		 END $$`)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v touched) error {
		w.Exec(`SELECT touch($1, $2)`, v.First, v.Second)
		return nil
	})
	return p
}

// publishOnEachPartition publishes the i-th of evs to partition i, choosing each
// event's subject for the partition its key goes to.
func publishOnEachPartition(t *testing.T, topic string, vs []touched) {
	t.Helper()
	reg := events.NewRegistry()
	events.Register[touched](reg, "Touched")
	var evs []events.Event
	for part, v := range vs {
		subject := ""
		for i := 0; subject == ""; i++ {
			if s := fmt.Sprintf("s%d", i); eventlog.Murmur2Partition([]byte(s), len(vs)) == part {
				subject = s
			}
		}
		e, err := reg.New("test", subject, v, events.WithSequence(1))
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	if _, err := pub.Publish(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
}
