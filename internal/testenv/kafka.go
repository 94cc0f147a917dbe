package testenv

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Kafka returns the broker addresses.
func Kafka(tb testing.TB) []string {
	tb.Helper()
	return Get(tb).KafkaBrokers
}

// Topic creates a topic with a unique name and the given partition count, and deletes
// it when the test ends.
func Topic(tb testing.TB, partitions int) string {
	tb.Helper()
	brokers := Kafka(tb)
	name := UniqueName(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopic(ctx, brokers, name, partitions); err != nil {
		tb.Fatalf("create topic %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = deleteTopic(ctx, brokers, name)
	})
	return name
}

// CreateTopic creates a topic (replication 1) and waits until every partition has a leader.
func CreateTopic(ctx context.Context, brokers []string, name string, partitions int) error {
	cc, err := dialController(ctx, brokers)
	if err != nil {
		return err
	}
	defer func() { _ = cc.Close() }()
	err = cc.CreateTopics(kafka.TopicConfig{Topic: name, NumPartitions: partitions, ReplicationFactor: 1})
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	for {
		parts, err := cc.ReadPartitions(name)
		if err == nil && len(parts) == partitions && allLed(parts) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(parts []kafka.Partition) bool {
	for _, p := range parts {
		if p.Leader.Port == 0 {
			return false
		}
	}
	return true
}

func deleteTopic(ctx context.Context, brokers []string, name string) error {
	cc, err := dialController(ctx, brokers)
	if err != nil {
		return err
	}
	defer func() { _ = cc.Close() }()
	return cc.DeleteTopics(name)
}

func dialController(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	ctrl, err := conn.Controller()
	if err != nil {
		return nil, err
	}
	cc, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = cc.SetDeadline(dl)
	}
	return cc, nil
}

// ReadAll returns every message of a topic up to each partition's current end,
// partition by partition in offset order. Its client and readers are closed before it
// returns.
func ReadAll(tb testing.TB, topic string) []kafka.Message {
	tb.Helper()
	brokers := Kafka(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		tb.Fatalf("metadata for %s: %v %+v", topic, err, meta)
	}
	var out []kafka.Message
	for _, p := range meta.Topics[0].Partitions {
		// A topic created a moment ago may answer "Not Leader For Partition" while its
		// leadership settles: retry for a few seconds.
		var end int64
		for attempt := 0; ; attempt++ {
			conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p.ID)
			if err == nil {
				end, err = conn.ReadLastOffset()
				_ = conn.Close()
			}
			if err == nil {
				break
			}
			if attempt >= 50 {
				tb.Fatalf("end offset %s/%d: %v", topic, p.ID, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		out = append(out, readPartition(ctx, tb, brokers, topic, p.ID, end)...)
	}
	return out
}

// readPartition reads a partition from its start up to end, over a reader it closes.
func readPartition(ctx context.Context, tb testing.TB, brokers []string, topic string, part int, end int64) []kafka.Message {
	tb.Helper()
	if end == 0 {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: part, MaxBytes: 8 << 20, MaxWait: 50 * time.Millisecond})
	defer func() { _ = r.Close() }()
	var out []kafka.Message
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			tb.Fatalf("read %s/%d: %v", topic, part, err)
		}
		out = append(out, m)
		if m.Offset >= end-1 {
			return out
		}
	}
}
