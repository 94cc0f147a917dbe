package lane

import (
	"testing"

	"go.uber.org/zap"

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
