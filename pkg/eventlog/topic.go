package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
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

// EnsureTopic creates the topic with retention.ms=-1, retention.bytes=-1 and
// cleanup.policy=delete, or checks an existing one: a topic whose retention is finite
// or whose cleanup policy compacts is refused with ErrHistoryAtRisk, naming the setting.
func EnsureTopic(ctx context.Context, brokers []string, cfg TopicConfig) (TopicInfo, error) {
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
	client := newClient(brokers)
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
		if err := CheckTopicKeepsHistory(ctx, brokers, cfg.Name); err != nil {
			return TopicInfo{}, err
		}
	}
	n, err := waitForLeaders(ctx, client, cfg.Name)
	if err != nil {
		return TopicInfo{}, err
	}
	return TopicInfo{Name: cfg.Name, Partitions: n, Created: created}, nil
}

// CheckTopicKeepsHistory refuses a topic whose settings would delete events.
func CheckTopicKeepsHistory(ctx context.Context, brokers []string, topic string) error {
	resp, err := newClient(brokers).DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			ConfigNames: []string{"retention.ms", "retention.bytes", "cleanup.policy"},
		}},
	})
	if err != nil {
		return fmt.Errorf("eventlog: describe topic %s: %w", topic, err)
	}
	if len(resp.Resources) != 1 {
		return fmt.Errorf("eventlog: describe topic %s: %d resources in the answer", topic, len(resp.Resources))
	}
	res := resp.Resources[0]
	if res.Error != nil {
		return fmt.Errorf("eventlog: describe topic %s: %w", topic, res.Error)
	}
	var problems []string
	for _, c := range res.ConfigEntries {
		switch c.ConfigName {
		case "retention.ms", "retention.bytes":
			if c.ConfigValue != RetentionForever {
				problems = append(problems, fmt.Sprintf("%s=%s (want %s)", c.ConfigName, c.ConfigValue, RetentionForever))
			}
		case "cleanup.policy":
			if strings.Contains(c.ConfigValue, "compact") {
				problems = append(problems, fmt.Sprintf("cleanup.policy=%s (want %s)", c.ConfigValue, CleanupDelete))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("eventlog: %w: %s has %s", ErrHistoryAtRisk, topic, strings.Join(problems, ", "))
	}
	return nil
}

// Partitions returns the topic's partition count.
func Partitions(ctx context.Context, brokers []string, topic string) (int, error) {
	resp, err := newClient(brokers).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("eventlog: metadata for %s: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return 0, fmt.Errorf("eventlog: metadata for %s: %w", topic, t.Error)
			}
			return len(t.Partitions), nil
		}
	}
	return 0, fmt.Errorf("eventlog: topic %s: %w", topic, kafka.UnknownTopicOrPartition)
}

func waitForLeaders(ctx context.Context, client *kafka.Client, topic string) (int, error) {
	for {
		resp, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil {
			for _, t := range resp.Topics {
				if t.Name != topic || t.Error != nil || len(t.Partitions) == 0 {
					continue
				}
				led := true
				for _, p := range t.Partitions {
					led = led && p.Error == nil && p.Leader.Port != 0
				}
				if led {
					return len(t.Partitions), nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("eventlog: topic %s has no leader for every partition: %w", topic, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// newClient returns a kafka-go client with a transport of its own. kafka-go's shared
// DefaultTransport caches metadata for 6 s, so a topic created a moment ago can look
// missing to a writer that shares it (seen here: "Unknown Topic Or Partition").
func newClient(brokers []string) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
}
