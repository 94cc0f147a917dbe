package eventlog_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
)

// Regression, issue 16: every call that made a kafka.Transport of its own and dropped
// it left the metadata goroutine of each of its connection pools running, with its
// connections: 20 calls of Partitions left 40 goroutines behind, and a projector
// waiting for activation leaked two pools every 500 ms. Calls now leave nothing, and
// a long-lived Client leaves nothing once closed. Not parallel: goleak sees every
// goroutine of the process, so this runs while no other test of the package does.
func TestClientsLeaveNoGoroutineBehind(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The check itself sees the leak: a Transport that is used and never closed.
	current := goleak.IgnoreCurrent()
	tr := &kafka.Transport{}
	_, err := (&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	require.NoError(t, err)
	require.Error(t, goleak.Find(current), "an unclosed transport's goroutines are found")
	tr.CloseIdleConnections()
	require.NoError(t, goleak.Find(current), "closing the transport ends them")

	for range 20 {
		n, err := eventlog.Partitions(ctx, brokers, topic)
		require.NoError(t, err)
		require.Equal(t, 3, n)
	}
	require.NoError(t, goleak.Find(current), "20 calls of eventlog.Partitions")

	// A long-lived Client keeps its connections: calls add no goroutine per call, at
	// most one per connection (ReadLayout fetches up to 8 partitions at once, each over
	// a connection; how many it has open when warm varies). A transport per call would
	// add two goroutines per call here.
	c := eventlog.NewClient(brokers)
	use := func(rounds int) {
		for range rounds {
			n, err := c.Partitions(ctx, topic)
			require.NoError(t, err)
			require.Equal(t, 3, n)
			_, err = c.ReadLayout(ctx, topic)
			require.NoError(t, err)
		}
	}
	use(20)
	warm := runtime.NumGoroutine()
	use(20)
	require.LessOrEqual(t, runtime.NumGoroutine(), warm+8, "a Client reuses its connections: no goroutine per call")
	c.Close()
	require.NoError(t, goleak.Find(current), "a Client used 80 times, then closed")

	// A closed Client connects again when used, and is closed again.
	_, err = c.Partitions(ctx, topic)
	require.NoError(t, err)
	c.Close()
	require.NoError(t, goleak.Find(current), "a Client used after Close, then closed again")
}
