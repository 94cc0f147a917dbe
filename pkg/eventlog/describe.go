package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"
)

// DescribedConfigs are the topic settings DescribeTopic reads: the three that decide
// whether the log keeps its history, then others a producer or an operator needs.
var DescribedConfigs = []string{
	"retention.ms", "retention.bytes", "cleanup.policy",
	"min.insync.replicas", "message.timestamp.type", "max.message.bytes",
}

// TopicDescription is what DescribeTopic found.
type TopicDescription struct {
	Name       string          `json:"name"`
	Partitions []PartitionInfo `json:"partitions"`
	// Configs holds each of DescribedConfigs the broker reported.
	Configs []TopicSetting `json:"configs"`
	// KeepsHistory is true when no setting would delete or compact events;
	// otherwise Problems names each setting, as ErrHistoryAtRisk does.
	KeepsHistory bool     `json:"keeps_history"`
	Problems     []string `json:"problems,omitempty"`
}

// PartitionInfo describes one partition.
type PartitionInfo struct {
	ID       int    `json:"id"`
	Leader   int    `json:"leader"` // broker id; -1 when there is none
	Replicas []int  `json:"replicas"`
	ISR      []int  `json:"isr"`
	Error    string `json:"error,omitempty"`
	// Start and End are the log start and end offsets: End - Start records at most.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// FirstRecord is the Kafka time of the first record (zero when empty): the
	// partitioning history Layout reads.
	FirstRecord time.Time `json:"first_record,omitzero"`
}

// TopicSetting is one topic configuration value and where it comes from.
type TopicSetting struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Default bool   `json:"default"` // the broker's default, not set on the topic
}

// DescribeTopic is Client.DescribeTopic over a Client it closes before returning.
func DescribeTopic(ctx context.Context, brokers []string, topic string) (TopicDescription, error) {
	return withClient(brokers, func(c *Client) (TopicDescription, error) { return c.DescribeTopic(ctx, topic) })
}

// DescribeTopic reads a topic's partitions (leaders, replicas, in-sync replicas,
// offsets, first record times) and its retention and cleanup settings, and says
// whether it keeps its history. It reads the topic's metadata afresh, not from the
// Client's cache.
func (c *Client) DescribeTopic(ctx context.Context, topic string) (TopicDescription, error) {
	if topic == "" {
		return TopicDescription{}, errors.New("eventlog: describe topic: name is empty")
	}
	c.refresh()
	client := c.kc
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return TopicDescription{}, fmt.Errorf("eventlog: describe topic %s: %w", topic, err)
	}
	d := TopicDescription{Name: topic}
	found := false
	for _, t := range meta.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return TopicDescription{}, fmt.Errorf("eventlog: describe topic %s: %w", topic, t.Error)
		}
		found = true
		for _, p := range t.Partitions {
			pi := PartitionInfo{ID: p.ID, Leader: -1, Replicas: brokerIDs(p.Replicas), ISR: brokerIDs(p.Isr)}
			if p.Leader.Port != 0 {
				pi.Leader = p.Leader.ID
			}
			if p.Error != nil {
				pi.Error = p.Error.Error()
			}
			d.Partitions = append(d.Partitions, pi)
		}
	}
	if !found {
		return TopicDescription{}, fmt.Errorf("eventlog: describe topic %s: %w", topic, kafka.UnknownTopicOrPartition)
	}
	sort.Slice(d.Partitions, func(i, j int) bool { return d.Partitions[i].ID < d.Partitions[j].ID })

	if d.Configs, err = topicConfigs(ctx, client, topic, DescribedConfigs); err != nil {
		return TopicDescription{}, err
	}
	d.Problems = historyProblems(d.Configs)
	d.KeepsHistory = len(d.Problems) == 0

	starts, ends, err := listBounds(ctx, client, topic)
	if err != nil {
		return TopicDescription{}, fmt.Errorf("eventlog: describe topic %s: %w", topic, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range d.Partitions {
		p := &d.Partitions[i]
		if p.ID >= len(starts) {
			continue
		}
		p.Start, p.End = starts[p.ID], ends[p.ID]
		if p.End <= p.Start {
			continue
		}
		g.Go(func() error {
			t, err := firstRecordTime(gctx, client, topic, p.ID, p.Start, p.End)
			if err != nil {
				return fmt.Errorf("eventlog: describe topic %s: first record of partition %d: %w", topic, p.ID, err)
			}
			p.FirstRecord = t
			return nil
		})
	}
	return d, g.Wait()
}

func brokerIDs(bs []kafka.Broker) []int {
	out := make([]int, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

// topicConfigs reads the named settings of a topic.
func topicConfigs(ctx context.Context, client *kafka.Client, topic string, names []string) ([]TopicSetting, error) {
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("eventlog: describe topic %s: %w", topic, err)
	}
	if len(resp.Resources) != 1 {
		return nil, fmt.Errorf("eventlog: describe topic %s: %d resources in the answer", topic, len(resp.Resources))
	}
	res := resp.Resources[0]
	if res.Error != nil {
		return nil, fmt.Errorf("eventlog: describe topic %s: %w", topic, res.Error)
	}
	byName := map[string]TopicSetting{}
	for _, c := range res.ConfigEntries {
		// ConfigSource 1 is a setting of the topic itself; older APIs say IsDefault.
		byName[c.ConfigName] = TopicSetting{Name: c.ConfigName, Value: c.ConfigValue,
			Default: c.IsDefault || (c.ConfigSource != 0 && c.ConfigSource != 1)}
	}
	out := make([]TopicSetting, 0, len(names))
	for _, n := range names {
		if s, ok := byName[n]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// historyProblems names each setting that would delete or compact events.
func historyProblems(settings []TopicSetting) []string {
	var problems []string
	for _, c := range settings {
		switch c.Name {
		case "retention.ms", "retention.bytes":
			if c.Value != RetentionForever {
				problems = append(problems, fmt.Sprintf("%s=%s (want %s)", c.Name, c.Value, RetentionForever))
			}
		case "cleanup.policy":
			if strings.Contains(c.Value, "compact") {
				problems = append(problems, fmt.Sprintf("cleanup.policy=%s (want %s)", c.Value, CleanupDelete))
			}
		}
	}
	return problems
}
