package lane

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/offsets"
)

// A partition reader decodes at most readerQueue messages ahead of its worker,
// whatever the batch size: the read-ahead is not a second batch held in memory.
func TestReaderReadAheadIsBoundedBelowTheBatch(t *testing.T) {
	t.Parallel()
	for batch, want := range map[int]int{1: 1, 50: 50, readerQueue: readerQueue, 1000: readerQueue, 10000: readerQueue} {
		env := &Env{Brokers: []string{"127.0.0.1:1"}, Topic: "t", BatchSize: batch}
		rd := env.NewReader(&Lane{Key: offsets.Key{Partition: 3}, Log: zap.NewNop()})
		if err := rd.Open(); err != nil {
			t.Fatal(err)
		}
		got := rd.reader.Stats().QueueCapacity
		rd.Close()
		if got != int64(want) {
			t.Errorf("batch size %d: queue capacity %d, want %d", batch, got, want)
		}
	}
}

// Records the log already holds fill a batch even when BatchTimeout passes while the
// reader decodes them: with a read-ahead of readerQueue, a batch cut at the timeout
// would hold about what was decoded ahead (many more transactions in a replay). The
// last record, with nothing behind it in the log, is a partial batch after the timeout.
func TestReaderFillsABatchFromRecordsTheLogHolds(t *testing.T) {
	t.Parallel()
	brokers, topic := testenv.Kafka(t), testenv.Topic(t, 1)
	const batch = 3 * readerQueue
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, BatchSize: batch + 1, BatchTimeout: time.Millisecond, Transport: tr}
	msgs := make([]kafka.Message, batch+1)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte("k"), Value: []byte(strconv.Itoa(i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	env := &Env{Brokers: brokers, Topic: topic, BatchSize: batch, BatchTimeout: time.Microsecond,
		Transient: prometheus.NewCounter(prometheus.CounterOpts{Name: "transient"})}
	rd := env.NewReader(&Lane{Key: offsets.Key{Topic: topic}, Log: zap.NewNop(), Status: &Row{}})
	defer rd.Close()
	got, err := rd.ReadBatch(ctx)
	if err != nil || len(got) != batch || got[batch-1].Offset != batch-1 {
		t.Fatalf("first batch: %d records, %v; want %d, the whole batch the log holds", len(got), err, batch)
	}
	got, err = rd.ReadBatch(ctx)
	if err != nil || len(got) != 1 || got[0].Offset != batch {
		t.Fatalf("second batch: %d records, %v; want the last record alone", len(got), err)
	}
}

// A batch's window opens when its first record came; for a live record (the log's
// last when fetched) that was already waiting when the worker asked, when the read
// before returned (it came while the worker applied that batch, so the apply and the
// next window overlap). A record with more behind it (a catch-up read), or one that
// had to be fetched, opens it when it came. A window that has passed still gives the
// read-ahead readerLeast. A closed reader forgets when its last read returned.
func TestReaderWindowOpensWhenTheFirstRecordCame(t *testing.T) {
	t.Parallel()
	const window = 20 * time.Millisecond
	rd := (&Env{BatchTimeout: window}).NewReader(&Lane{Log: zap.NewNop()})
	last := kafka.Message{Offset: 41, HighWaterMark: 42}     // the log's last record when fetched
	caughtUp := kafka.Message{Offset: 41, HighWaterMark: 43} // or the last before a commit marker
	behind := kafka.Message{Offset: 41, HighWaterMark: 44}   // more records behind it
	asked := time.Now()
	waiting := asked.Add(readerQueued / 2) // got from the read-ahead
	fetched := asked.Add(readerQueued)     // got from the broker

	check := func(what string, got, want time.Time) {
		t.Helper()
		if !got.Equal(want) {
			t.Errorf("%s: window closes %v after the ask, want %v", what, got.Sub(asked), want.Sub(asked))
		}
	}
	check("first read", rd.window(asked, waiting, last), waiting.Add(window))
	rd.handed = asked.Add(-5 * time.Millisecond)
	check("live record waiting", rd.window(asked, waiting, last), rd.handed.Add(window))
	check("record before a commit marker waiting", rd.window(asked, waiting, caughtUp), rd.handed.Add(window))
	check("record with more behind it waiting", rd.window(asked, waiting, behind), waiting.Add(window))
	check("live record fetched", rd.window(asked, fetched, last), fetched.Add(window))
	rd.handed = asked.Add(-2 * window)
	check("window passed during the apply", rd.window(asked, waiting, last), waiting.Add(readerLeast))
	rd.Close()
	check("after Close", rd.window(asked, waiting, last), waiting.Add(window))
}
