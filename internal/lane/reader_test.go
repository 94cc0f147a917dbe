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

// A batch's window opens when its first record came: when the worker asked, if the
// record had to be fetched; when the read before returned, if the record was already
// waiting and was the log's last (it came while the worker applied that batch, so the
// apply and the next window overlap). A record with more behind it (a catch-up read)
// opens it when asked. A window that has passed still gives the read-ahead readerLeast.
func TestReaderWindowOpensWhenTheFirstRecordCame(t *testing.T) {
	t.Parallel()
	const window = time.Hour // far above any scheduling delay in the test
	rd := (&Env{BatchTimeout: window}).NewReader(&Lane{Log: zap.NewNop()})
	near := func(got, want time.Time) bool { d := got.Sub(want); return d > -time.Minute && d < time.Minute }
	last := kafka.Message{Offset: 41, HighWaterMark: 42}       // the log's last record when fetched
	caughtUp := kafka.Message{Offset: 41, HighWaterMark: 43}   // or the last before a commit marker
	replaying := kafka.Message{Offset: 41, HighWaterMark: 900} // more records behind it

	now := time.Now()
	if got := rd.window(now, last); !near(got, now.Add(window)) {
		t.Errorf("first read: window closes %v after now, want %v", got.Sub(now), window)
	}
	rd.handed = now.Add(-10 * time.Minute)
	for _, m := range []kafka.Message{last, caughtUp} {
		if got := rd.window(time.Now(), m); !near(got, rd.handed.Add(window)) {
			t.Errorf("record %d of %d waiting when asked: window closes %v after the read before, want %v", m.Offset, m.HighWaterMark, got.Sub(rd.handed), window)
		}
	}
	if got := rd.window(time.Now(), replaying); !near(got, time.Now().Add(window)) {
		t.Errorf("record with more behind it waiting when asked: window closes %v from now, want %v", time.Until(got), window)
	}
	if got := rd.window(now.Add(-5*time.Minute), last); !near(got, time.Now().Add(window)) {
		t.Errorf("record fetched after 5 minutes: window closes %v after it came, want %v", time.Until(got), window)
	}
	rd.handed = now.Add(-2 * window)
	least := time.Now().Add(readerLeast)
	if got := rd.window(time.Now(), last); got.Before(least) || got.After(least.Add(time.Minute)) {
		t.Errorf("window passed during the apply: closes %v from now, want %v", time.Until(got), readerLeast)
	}
}
