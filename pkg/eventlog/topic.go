package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/retry"
)

// Topic settings the log needs: keep every event forever, never compact.
const (
	RetentionForever = "-1"
	CleanupDelete    = "delete"
)

// TopicConfig describes an event topic. Zero values take the defaults.
type TopicConfig struct {
	Name              string // required
	Partitions        int    // default PartitionsDefault
	ReplicationFactor int    // default ReplicationFactorDefault
}

// Defaults for TopicConfig.
const (
	PartitionsDefault        = 12
	ReplicationFactorDefault = 1
)

// ErrHistoryAtRisk is returned for an existing topic whose settings would delete or
// compact away events: the log is the source of truth and must keep all of them.
var ErrHistoryAtRisk = errors.New("topic would delete history")

// TopicInfo is what EnsureTopic found or made.
type TopicInfo struct {
	Name       string
	Partitions int
	Created    bool // false when the topic already existed
}

// EnsureTopic is Client.EnsureTopic over a Client it closes before returning.
func EnsureTopic(ctx context.Context, brokers []string, cfg TopicConfig) (TopicInfo, error) {
	return withClient(brokers, func(c *Client) (TopicInfo, error) { return c.EnsureTopic(ctx, cfg) })
}

// EnsureTopic creates the topic with retention.ms=-1, retention.bytes=-1 and
// cleanup.policy=delete, or checks an existing one: a topic whose retention is finite
// or whose cleanup policy compacts is refused with ErrHistoryAtRisk, naming the setting.
func (c *Client) EnsureTopic(ctx context.Context, cfg TopicConfig) (TopicInfo, error) {
	if cfg.Name == "" {
		return TopicInfo{}, errors.New("eventlog: topic name is empty")
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = PartitionsDefault
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = ReplicationFactorDefault
	}
	if cfg.Partitions < 0 || cfg.ReplicationFactor < 0 {
		return TopicInfo{}, fmt.Errorf("eventlog: topic %s: partitions %d and replication factor %d must be positive",
			cfg.Name, cfg.Partitions, cfg.ReplicationFactor)
	}
	client := c.kc
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: cfg.Name, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor,
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "retention.ms", ConfigValue: RetentionForever},
			{ConfigName: "retention.bytes", ConfigValue: RetentionForever},
			{ConfigName: "cleanup.policy", ConfigValue: CleanupDelete},
		},
	}}})
	if err != nil {
		return TopicInfo{}, fmt.Errorf("eventlog: create topic %s: %w", cfg.Name, err)
	}
	created := true
	if terr := resp.Errors[cfg.Name]; terr != nil {
		if !errors.Is(terr, kafka.TopicAlreadyExists) {
			return TopicInfo{}, fmt.Errorf("eventlog: create topic %s: %w", cfg.Name, terr)
		}
		created = false
		if err := c.CheckTopicKeepsHistory(ctx, cfg.Name); err != nil {
			return TopicInfo{}, err
		}
	}
	n, err := waitForLeaders(ctx, client, cfg.Name)
	if err != nil {
		return TopicInfo{}, err
	}
	return TopicInfo{Name: cfg.Name, Partitions: n, Created: created}, nil
}

// CheckTopicKeepsHistory is Client.CheckTopicKeepsHistory over a Client it closes
// before returning.
func CheckTopicKeepsHistory(ctx context.Context, brokers []string, topic string) error {
	_, err := withClient(brokers, func(c *Client) (struct{}, error) { return struct{}{}, c.CheckTopicKeepsHistory(ctx, topic) })
	return err
}

// CheckTopicKeepsHistory refuses a topic whose settings would delete events.
func (c *Client) CheckTopicKeepsHistory(ctx context.Context, topic string) error {
	settings, err := topicConfigs(ctx, c.kc, topic, []string{"retention.ms", "retention.bytes", "cleanup.policy"})
	if err != nil {
		return err
	}
	if problems := historyProblems(settings); len(problems) > 0 {
		return fmt.Errorf("eventlog: %w: %s has %s", ErrHistoryAtRisk, topic, strings.Join(problems, ", "))
	}
	return nil
}

// Partitions is Client.Partitions over a Client it closes before returning.
func Partitions(ctx context.Context, brokers []string, topic string) (int, error) {
	return withClient(brokers, func(c *Client) (int, error) { return c.Partitions(ctx, topic) })
}

// Partitions returns the topic's partition count, from the Client's metadata: a
// partition added in the last few seconds may be missing (ReadLayout reads afresh).
func (c *Client) Partitions(ctx context.Context, topic string) (int, error) {
	n, err := partitionCount(ctx, c.kc, topic)
	if err != nil {
		return 0, fmt.Errorf("eventlog: topic %s: %w", topic, err)
	}
	return n, nil
}

// LeaderWaitDefault bounds how long EnsureTopic waits for a topic's partitions to
// have leaders that accept requests, when its context has no deadline of its own.
const LeaderWaitDefault = 30 * time.Second

// waitForLeaders waits until every partition of the topic has a leader that serves
// it, and returns the partition count. Metadata naming a leader is not enough: a
// broker publishes a new topic's metadata before its replica manager leads the
// partitions, and a write in that window fails with "Not Leader For Partition" (seen
// on the first write after EnsureTopic). So each partition is also asked for its
// offsets, which only its serving leader answers, until all of them answer.
func waitForLeaders(ctx context.Context, client *kafka.Client, topic string) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, LeaderWaitDefault)
		defer cancel()
	}
	var n int
	var last error
	err := leaderRetry.Do(ctx, retry.Hooks{Failed: func(_ int, err error) { last = err }}, func(ctx context.Context) error {
		var err error
		n, err = servedPartitions(ctx, client, topic)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("eventlog: topic %s: not every partition has a serving leader: %w", topic, errors.Join(err, last))
	}
	return n, nil
}

// leaderRetry asks again and again: a new topic's leaders are there within moments.
var leaderRetry = retry.Policy{Min: 50 * time.Millisecond, Max: 50 * time.Millisecond, NoJitter: true}

// servedPartitions returns the topic's partition count when every partition has a
// leader in the metadata and that leader answers for it; else the first problem.
func servedPartitions(ctx context.Context, client *kafka.Client, topic string) (int, error) {
	resp, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	var parts []kafka.Partition
	for _, t := range resp.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return 0, t.Error
		}
		parts = t.Partitions
	}
	if len(parts) == 0 {
		return 0, fmt.Errorf("no partitions in the metadata yet")
	}
	reqs := make([]kafka.OffsetRequest, 0, len(parts))
	for _, p := range parts {
		if p.Error != nil {
			return 0, fmt.Errorf("partition %d: %w", p.ID, p.Error)
		}
		if p.Leader.Port == 0 {
			return 0, fmt.Errorf("partition %d: no leader yet", p.ID)
		}
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	answered := 0
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return 0, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		answered++
	}
	if answered != len(parts) {
		return 0, fmt.Errorf("%d of %d partitions answered", answered, len(parts))
	}
	return len(parts), nil
}
