package eventlog_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

// writeTo writes messages to the partitions their keys name ("0", "1", …), with the
// times they carry, through a writer and a transport it closes.
func writeTo(t *testing.T, topic string, msgs ...kafka.Message) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(testenv.Kafka(t)...), Topic: topic, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: tr,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int {
			p, _ := strconv.Atoi(string(m.Key))
			return p
		})}
	defer func() { require.NoError(t, w.Close()) }()
	require.NoError(t, w.WriteMessages(context.Background(), msgs...))
}

// Not parallel: goleak sees every goroutine of the process, so this test runs while
// no other test of the package does (parallel tests start after the serial ones).
func TestReadLayoutTakesEachPartitionsFirstRecordTime(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, 3)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	writeTo(t, topic,
		kafka.Message{Key: []byte("0"), Value: []byte("a"), Time: t0},
		kafka.Message{Key: []byte("1"), Value: []byte("b"), Time: t0.Add(time.Hour)},
		kafka.Message{Key: []byte("0"), Value: []byte("c"), Time: t0.Add(2 * time.Hour)},
	)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := eventlog.ReadLayout(ctx, brokers, topic)
	require.NoError(t, err)
	require.Equal(t, 3, l.Partitions)
	require.True(t, l.FirstRecord[0].Equal(t0), "partition 0: %v", l.FirstRecord[0])
	require.True(t, l.FirstRecord[1].Equal(t0.Add(time.Hour)), "partition 1: %v", l.FirstRecord[1])
	require.True(t, l.FirstRecord[2].IsZero(), "empty partition 2: %v", l.FirstRecord[2])

	_, err = eventlog.ReadLayout(ctx, brokers, testenv.UniqueName(t))
	require.ErrorContains(t, err, "Unknown Topic Or Partition")
}

// A topic just created takes its first write without a "Not Leader For Partition"
// retry: EnsureTopic returns once every partition's leader serves it. Not parallel,
// for goleak.
func TestEnsureTopicReturnsOnceLeadersServe(t *testing.T) {
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for range 3 {
		name := testenv.UniqueName(t)
		info, err := eventlog.EnsureTopic(ctx, brokers, eventlog.TopicConfig{Name: name, Partitions: 12})
		require.NoError(t, err)
		require.Equal(t, 12, info.Partitions)
		core, logs := observer.New(zap.WarnLevel)
		p, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: brokers, Topic: name, Logger: zap.New(core)})
		require.NoError(t, err)
		var evs []events.Event
		for i := range 120 {
			evs = append(evs, sampleEvent("user-"+strconv.Itoa(i), 1))
		}
		_, err = p.Publish(ctx, evs...)
		require.NoError(t, err)
		require.NoError(t, p.Close())
		for _, e := range logs.All() {
			t.Errorf("warning on the first write to %s: %s", name, e.Message)
		}
		deleteTopic(t, name)
	}
}

func deleteTopic(t *testing.T, name string) {
	t.Helper()
	c := eventlog.NewClient(testenv.Kafka(t))
	defer c.Close()
	_, _ = c.Kafka().DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{name}})
}
