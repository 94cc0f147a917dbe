package lane

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/retry"
)

// Reader is a kafka-go reader for one lane's partition that starts over at the
// lane's position after a read error, instead of giving up: a broker restart is a
// transient fault like any other. It is open only while reading: Close it when
// another source (the effects' feed) has the rest.
type Reader struct {
	env    *Env
	l      *Lane
	reader *kafka.Reader
	fails  int
	handed time.Time // when the last read returned to the worker (readBatch)
}

// readerRetry is how long a reader waits after failures in a row before it starts over.
var readerRetry = retry.Policy{Min: 250 * time.Millisecond, Max: 5 * time.Second}

// readerQueue is the most messages a partition reader decodes ahead of its worker:
// enough to hide a fetch's round trip, small against a batch. The rest of a fetch
// waits in the connection's socket buffer, in the kernel's memory, not the process's.
const readerQueue = 100

// readerFill bounds how long a batch waits for records the log already holds
// (readBatch).
const readerFill = time.Second

// readerQueued is how soon a first record must come for readBatch to count it as
// waiting in the read-ahead when the worker asked (a ready channel answers in
// microseconds). A record fetched that fast may also have just come on the open
// fetch: its window then opens a little early, never late.
const readerQueued = time.Millisecond

// readerLeast is the least a batch whose window has passed still waits for the
// records in the read-ahead: they are in memory, and with a context already done
// kafka-go would pick at random between it and a ready record. A live partition
// whose applies outlast the window thus commits about once an apply, each batch
// holding what came during the one before.
const readerLeast = time.Millisecond

// readerMaxBytes bounds one fetch of a partition reader: a few batches of the
// example's events, and above the broker's default message.max.bytes (1 MiB) so
// the largest record still fits.
const readerMaxBytes = 2 << 20

// NewReader returns a closed reader of the lane's partition.
func (env *Env) NewReader(l *Lane) *Reader { return &Reader{env: env, l: l} }

// Open opens the reader at the lane's position.
func (rd *Reader) Open() error {
	env := rd.env
	rd.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers: env.Brokers, Topic: env.Topic, Partition: rd.l.Key.Partition,
		// Memory: a partition holds at most QueueCapacity messages decoded ahead;
		// with the batch being applied, that bounds a partition's share of the
		// process (docs/operations.md, Memory).
		MinBytes: 1, MaxBytes: readerMaxBytes, MaxWait: 250 * time.Millisecond,
		QueueCapacity: min(readerQueue, env.BatchSize), ReadBackoffMin: 50 * time.Millisecond, ReadBackoffMax: time.Second,
		MaxAttempts: 10,
		ErrorLogger: kafka.LoggerFunc(func(f string, a ...any) { rd.l.Log.Sugar().Debugf("kafka reader: "+f, a...) }),
	})
	return rd.reader.SetOffset(rd.l.Next)
}

// IsOpen reports whether the reader is open.
func (rd *Reader) IsOpen() bool { return rd.reader != nil }

// Close closes the reader; the next read opens it at the lane's position.
func (rd *Reader) Close() {
	if rd.reader != nil {
		_ = rd.reader.Close()
		rd.reader = nil
	}
	rd.handed = time.Time{} // a reopened reader's first record is fetched, not waiting
}

// Fetch returns the next message, waiting at most wait for it.
func (rd *Reader) Fetch(ctx context.Context, wait time.Duration) (kafka.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return rd.reader.FetchMessage(ctx)
}

// ReadBatch reads a batch from the lane's position. On a read error it logs,
// waits, closes the reader and returns the error; the next call reopens it.
func (rd *Reader) ReadBatch(ctx context.Context) ([]kafka.Message, error) {
	if rd.reader == nil {
		if err := rd.Open(); err != nil {
			return nil, err
		}
	}
	msgs, err := rd.readBatch(ctx)
	if err == nil || ctx.Err() != nil {
		rd.fails = 0
		return msgs, err
	}
	rd.Failed(ctx, err)
	return nil, err
}

// Failed logs a read error, closes the reader (the next read reopens it at the
// position) and waits a little longer after each failure in a row.
func (rd *Reader) Failed(ctx context.Context, err error) {
	rd.fails++
	rd.env.Transient.Inc()
	if rd.fails == 1 || rd.fails%10 == 0 {
		rd.l.Log.Warn("reading the partition failed; starting over at the stored position", zap.Int("attempt", rd.fails), zap.Error(err))
	}
	rd.Close()
	_ = retry.Sleep(ctx, readerRetry.Wait(rd.fails))
}

// readBatch waits up to a second for a first message, then gathers more until the
// batch is full, or the batch window (BatchTimeout) has passed with no more in the
// log. Records the log already held at the last fetch (below its high-water mark)
// are read into the batch however long decoding them takes (up to readerFill): the
// read-ahead is short (readerQueue), and a batch cut at BatchTimeout while the reader
// decodes would be a smaller one, more transactions for the same events. An empty
// batch means the partition is idle.
//
// The window opens when the batch's first record came (window). A live record (the
// log's last when fetched) already waiting when the worker asked came after the read
// before returned, while the worker applied that batch (or looked after an idle
// partition): its window opened then, so a batch's apply and the next one's window
// overlap, and a record waits for the longer of the two, not both.
func (rd *Reader) readBatch(ctx context.Context) ([]kafka.Message, error) {
	asked := time.Now()
	m, err := rd.Fetch(ctx, time.Second)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			rd.handed = time.Now()
			return nil, nil
		}
		return nil, err
	}
	batch := make([]kafka.Message, 1, rd.env.BatchSize)
	batch[0] = m
	wait, cancelWait := context.WithDeadline(ctx, rd.window(asked, time.Now(), m))
	defer cancelWait()
	held, cancelHeld := context.WithTimeout(ctx, readerFill)
	defer cancelHeld()
	for len(batch) < rd.env.BatchSize {
		fill := wait
		if behind(batch[len(batch)-1]) {
			fill = held
		}
		m, err := rd.reader.FetchMessage(fill)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			return nil, err
		}
		batch = append(batch, m)
	}
	rd.handed = time.Now()
	return batch, nil
}

// window returns when the batch window closes of a batch whose first record m the
// worker asked for at asked and got at came (BatchWindow).
func (rd *Reader) window(asked, came time.Time, m kafka.Message) time.Time {
	return BatchWindow(asked, came, rd.handed, m, rd.env.BatchTimeout)
}

// BatchWindow returns when the batch window closes of a batch whose first record
// first a partition reader was asked for at asked and got at came, the read before
// having returned at handed (zero: none): timeout after the record came, or after
// handed if the record was already waiting and was the log's last when fetched (a
// live partition's); at least readerLeast after came. A first record with more
// behind it opens the window when it came: the batch is a catch-up read, whose
// records the log holds, and its window is for the last of them (the end of a
// replay's last read, which a window already passed would cut into a batch of its
// own). The bench's live floor gathers by it too.
func BatchWindow(asked, came, handed time.Time, first kafka.Message, timeout time.Duration) time.Time {
	opened := came
	if came.Sub(asked) < readerQueued && !handed.IsZero() && !behind(first) {
		opened = handed
	}
	return maxTime(opened.Add(timeout), came.Add(readerLeast))
}

// behind reports whether the log held more records after m when m was fetched (a
// transaction's commit marker, which is never read, takes at most one offset after
// the last record).
func behind(m kafka.Message) bool { return m.HighWaterMark-m.Offset > 2 }

// maxTime returns the later of a and b.
func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
