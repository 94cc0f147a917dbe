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

// A long-lived Client's transport answers metadata from a cache that kafka-go
// refreshes every few seconds. A layout must not miss partitions added meanwhile: it
// decides which partition a key belongs to, and a count too small takes correctly
// routed records for misrouted ones. ReadLayout and DescribeTopic read afresh.
func TestClientSeesPartitionsAddedAMomentAgo(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// layoutOf reads the layout once the broker serves every partition: a topic's
	// metadata names leaders a moment before they answer (Not Leader For Partition).
	layoutOf := func(read func() (eventlog.Layout, error)) eventlog.Layout {
		var l eventlog.Layout
		testenv.WaitFor(t, 30*time.Second, "every partition's leader to answer", func() bool {
			var err error
			l, err = read()
			return err == nil
		})
		return l
	}
	c := eventlog.NewClient(brokers)
	defer c.Close()
	require.Equal(t, 2, layoutOf(func() (eventlog.Layout, error) { return c.ReadLayout(ctx, topic) }).Partitions)

	resp, err := c.Kafka().CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	require.NoError(t, err)
	for _, e := range resp.Errors {
		require.NoError(t, e)
	}
	// The broker itself takes a moment to show the new partitions: wait until a new
	// client sees all four served. The long-lived one must see them at once.
	testenv.WaitFor(t, 30*time.Second, "the broker to serve four partitions", func() bool {
		l, err := eventlog.ReadLayout(ctx, brokers, topic)
		return err == nil && l.Partitions == 4
	})
	l, err := c.ReadLayout(ctx, topic)
	require.NoError(t, err)
	require.Equal(t, 4, l.Partitions, "the long-lived client's layout right after the topic grew")
	d, err := c.DescribeTopic(ctx, topic)
	require.NoError(t, err)
	require.Len(t, d.Partitions, 4, "the long-lived client's description right after the topic grew")
}
