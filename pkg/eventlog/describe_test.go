package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
)

func TestDescribeTopic(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := testenv.UniqueName(t)
	_, err := eventlog.EnsureTopic(ctx, brokers, eventlog.TopicConfig{Name: name, Partitions: 4})
	require.NoError(t, err)
	defer deleteTopic(t, name)
	at := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	writeTo(t, name, kafka.Message{Key: []byte("2"), Value: []byte("x"), Time: at}, kafka.Message{Key: []byte("2"), Value: []byte("y"), Time: at})

	d, err := eventlog.DescribeTopic(ctx, brokers, name)
	require.NoError(t, err)
	require.True(t, d.KeepsHistory, "%v", d.Problems)
	require.Len(t, d.Partitions, 4)
	for _, p := range d.Partitions {
		require.GreaterOrEqual(t, p.Leader, 0, "partition %d has a leader", p.ID)
		require.Equal(t, []int{p.Leader}, p.ISR)
	}
	require.Equal(t, int64(2), d.Partitions[2].End)
	require.True(t, d.Partitions[2].FirstRecord.Equal(at))
	require.True(t, d.Partitions[0].FirstRecord.IsZero())
	settings := map[string]eventlog.TopicSetting{}
	for _, s := range d.Configs {
		settings[s.Name] = s
	}
	require.Equal(t, eventlog.TopicSetting{Name: "retention.ms", Value: "-1"}, settings["retention.ms"])
	require.Equal(t, "delete", settings["cleanup.policy"].Value)
	require.True(t, settings["message.timestamp.type"].Default)

	risky := testenv.UniqueName(t)
	c := testenv.KafkaClient(t)
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: risky, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact,delete"}}}}})
	require.NoError(t, err)
	require.NoError(t, resp.Errors[risky])
	defer deleteTopic(t, risky)
	d, err = eventlog.DescribeTopic(ctx, brokers, risky)
	require.NoError(t, err)
	require.False(t, d.KeepsHistory)
	require.Equal(t, []string{"retention.ms=604800000 (want -1)", "cleanup.policy=compact,delete (want delete)"}, d.Problems)
}
