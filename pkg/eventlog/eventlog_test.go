package eventlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

func sampleEvent(subject string, seq uint64) events.Event {
	return events.Event{
		ID: events.NewID(), Source: "users-api", Type: "UserRegistered", Subject: subject,
		Time:            time.Date(2026, 11, 26, 12, 0, 0, 987654321, time.UTC),
		DataContentType: "application/json", Data: json.RawMessage(`{"email":"a@example.test","name":"Ada"}`),
		Sequence: seq, SchemaVersion: 3, CorrelationID: "corr", CausationID: "cause",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}

func newPublisher(t *testing.T, topic string) *eventlog.Publisher {
	t.Helper()
	p, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// readAt reads the message at one partition and offset with a plain partition reader.
func readAt(t *testing.T, topic string, partition int, offset int64) kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: testenv.Kafka(t), Topic: topic, Partition: partition, MaxWait: 50 * time.Millisecond})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(offset); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("read %s/%d@%d: %v", topic, partition, offset, err)
	}
	return m
}

func TestRoundTripThroughKafkaBothContentModes(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 3)
	ctx := context.Background()
	want := sampleEvent("user-42", 7)

	res, err := newPublisher(t, topic).Publish(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eventlog.FromMessage(readAt(t, topic, res[0].Partition, res[0].Offset))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("binary mode through Kafka:\n got %+v\nwant %+v", got, want)
	}

	// Structured mode, as a client that writes the whole event as JSON would.
	want2 := sampleEvent("user-43", 1)
	body, err := json.Marshal(want2)
	if err != nil {
		t.Fatal(err)
	}
	m := writeRaw(t, topic, kafka.Message{Key: []byte(want2.Subject), Value: body,
		Headers: []kafka.Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}})
	got2, err := eventlog.FromMessage(readAt(t, topic, m.Partition, m.Offset))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got2, want2) {
		t.Fatalf("structured mode through Kafka:\n got %+v\nwant %+v", got2, want2)
	}
}

// writeRaw writes one message with a bare kafka-go writer, headers exactly as given,
// and returns it with its partition and offset.
func writeRaw(t *testing.T, topic string, m kafka.Message) kafka.Message {
	t.Helper()
	var done kafka.Message
	w := &kafka.Writer{Addr: kafka.TCP(testenv.Kafka(t)...), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: testenv.Transport(t),
		Completion: func(ms []kafka.Message, err error) {
			if err == nil {
				done = ms[0]
			}
		}}
	if err := w.WriteMessages(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return done
}

func TestPlainHeadersFromAnotherClientAreRead(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 1)
	// Headers as a Python or Java service would set them by hand: no specversion,
	// no subject (the key stands in), capitalised content-type.
	m := writeRaw(t, topic, kafka.Message{Key: []byte("user-7"), Value: []byte(`{"email":"c@example.test"}`),
		Headers: []kafka.Header{
			{Key: "ce_id", Value: []byte("py-1")}, {Key: "ce_source", Value: []byte("billing")},
			{Key: "ce_type", Value: []byte("UserRegistered")}, {Key: "ce_time", Value: []byte("2026-11-26T10:00:00Z")},
			{Key: "ce_sequence", Value: []byte("1")}, {Key: "Content-Type", Value: []byte("application/json")},
		}})
	e, err := eventlog.FromMessage(readAt(t, topic, m.Partition, m.Offset))
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != "py-1" || e.Subject != "user-7" || e.Source != "billing" || e.Sequence != 1 ||
		!e.Time.Equal(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)) || string(e.Data) != `{"email":"c@example.test"}` {
		t.Fatalf("decoded %+v", e)
	}
}

func TestMurmur2PlacementMatchesJavaClients(t *testing.T) {
	t.Parallel()
	// Partitions computed by Apache Kafka's own
	// Utils.toPositive(Utils.murmur2(key.getBytes(UTF_8))) % n, from kafka-clients
	// 4.1.1 on this machine (a one-off Java program; the Java default partitioner
	// places keyed records this way).
	vectors := []struct {
		key     string
		of12    int
		ofThree int
	}{
		{"user-1", 8, 2}, {"user-42", 4, 1}, {"user-1000", 7, 1}, {"aggregate-7f3c", 7, 1},
		{"ünïcödé-ключ", 8, 2}, {"a", 4, 1}, {"order:2026-11-26:0001", 0, 0},
	}
	for _, n := range []int{12, 3} {
		topic := testenv.Topic(t, n)
		p := newPublisher(t, topic)
		var evs []events.Event
		for _, v := range vectors {
			evs = append(evs, sampleEvent(v.key, 1))
		}
		res, err := p.Publish(context.Background(), evs...)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vectors {
			want := v.of12
			if n == 3 {
				want = v.ofThree
			}
			if res[i].Partition != want {
				t.Errorf("key %q of %d partitions landed in %d, Java puts it in %d", v.key, n, res[i].Partition, want)
			}
		}
	}
}

func TestPublishReportsEachOffsetInOrder(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 4)
	p := newPublisher(t, topic)
	var evs []events.Event
	for i := range 500 {
		evs = append(evs, sampleEvent(fmt.Sprintf("user-%d", i%20), uint64(i/20+1)))
	}
	res, err := p.Publish(context.Background(), evs...)
	if err != nil {
		t.Fatal(err)
	}
	next := map[int]int64{}
	for i, r := range res {
		if r.Err != nil || r.Offset != next[r.Partition] {
			t.Fatalf("event %d: %+v, want offset %d of partition %d", i, r, next[r.Partition], r.Partition)
		}
		next[r.Partition]++
	}
	// Spot-check: the event reported at an offset is the one stored there.
	got, err := eventlog.FromMessage(readAt(t, topic, res[321].Partition, res[321].Offset))
	if err != nil || got.ID != evs[321].ID {
		t.Fatalf("offset %d holds %v (%v), want %s", res[321].Offset, got.ID, err, evs[321].ID)
	}
}

func TestPublishRefusesInvalidBatchWholly(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 1)
	p := newPublisher(t, topic)
	bad := sampleEvent("user-1", 2)
	bad.Data = json.RawMessage(`{"x":`)
	_, err := p.Publish(context.Background(), sampleEvent("user-1", 1), bad)
	if !errors.Is(err, events.ErrInvalidJSON) {
		t.Fatalf("err = %v, want invalid JSON", err)
	}
	conn, err := kafka.DialLeader(context.Background(), "tcp", testenv.Kafka(t)[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	last, err := conn.ReadLastOffset()
	if err != nil || last != 0 {
		t.Fatalf("log end offset %d (%v): the valid event before the bad one was sent", last, err)
	}
}

func TestPublishToUnreachableBrokerFails(t *testing.T) {
	t.Parallel()
	p, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "nowhere", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Publish(ctx, sampleEvent("user-1", 1))
	if err == nil || len(res) != 1 || res[0].Err == nil || res[0].Offset != -1 {
		t.Fatalf("publish to a closed port: res %+v err %v", res, err)
	}
}

func TestEnsureTopicKeepsHistory(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := testenv.KafkaClient(t)
	name := testenv.UniqueName(t)
	info, err := eventlog.EnsureTopic(ctx, brokers, eventlog.TopicConfig{Name: name, Partitions: 6})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Created || info.Partitions != 6 {
		t.Fatalf("first EnsureTopic: %+v", info)
	}
	if err := eventlog.CheckTopicKeepsHistory(ctx, brokers, name); err != nil {
		t.Fatalf("the topic it created: %v", err)
	}
	info, err = eventlog.EnsureTopic(ctx, brokers, eventlog.TopicConfig{Name: name, Partitions: 6})
	if err != nil || info.Created {
		t.Fatalf("second EnsureTopic: %+v %v", info, err)
	}

	for _, bad := range []kafka.ConfigEntry{
		{ConfigName: "retention.ms", ConfigValue: "604800000"},
		{ConfigName: "cleanup.policy", ConfigValue: "compact"},
		{ConfigName: "retention.bytes", ConfigValue: "1073741824"},
	} {
		risky := testenv.UniqueName(t)
		resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
			Topic: risky, NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{bad}}}})
		if err != nil || resp.Errors[risky] != nil {
			t.Fatalf("create %s: %v %v", risky, err, resp.Errors)
		}
		_, err = eventlog.EnsureTopic(ctx, brokers, eventlog.TopicConfig{Name: risky, Partitions: 1})
		if !errors.Is(err, eventlog.ErrHistoryAtRisk) || !contains(err.Error(), bad.ConfigName+"="+bad.ConfigValue) {
			t.Errorf("topic with %s=%s: err = %v, want ErrHistoryAtRisk naming the setting", bad.ConfigName, bad.ConfigValue, err)
		}
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{risky}})
	}
	_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestNewPublisherNamesTheBadSetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  eventlog.PublisherConfig
		want string
	}{
		{eventlog.PublisherConfig{Topic: "t"}, "Brokers"},
		{eventlog.PublisherConfig{Brokers: []string{"x:1"}}, "Topic"},
		{eventlog.PublisherConfig{Brokers: []string{"x:1"}, Topic: "t", Compression: "brotli"}, "Compression"},
		{eventlog.PublisherConfig{Brokers: []string{"x:1"}, Topic: "t", BatchSize: -1}, "BatchSize"},
	}
	for _, tt := range tests {
		if _, err := eventlog.NewPublisher(tt.cfg); err == nil || !contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want it to name %s", tt.cfg, err, tt.want)
		}
	}
}

// Not parallel: it counts the process's allocations. Single events, as a service
// sends them one call each, must not pay for a bulk call's batch: kafka-go
// allocates a batch's whole capacity when it opens one, 150 KB at 1,000 messages.
// Calls of each size, one after the other, land in call order.
func TestSingleEventCallsDoNotAllocateABulkBatch(t *testing.T) {
	topic := testenv.Topic(t, 1)
	p := newPublisher(t, topic)
	ctx := context.Background()
	var evs []events.Event
	publish := func(n int) []eventlog.Result {
		t.Helper()
		batch := make([]events.Event, n)
		for i := range batch {
			batch[i] = sampleEvent("user-1", uint64(len(evs)+i+1))
		}
		res, err := p.Publish(ctx, batch...)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, batch...)
		return res
	}
	publish(1) // connections and metadata first
	const singles = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range singles {
		publish(1)
	}
	runtime.ReadMemStats(&after)
	perCall := (after.TotalAlloc - before.TotalAlloc) / singles
	t.Logf("%d bytes allocated per single-event call", perCall)
	if perCall > 40<<10 {
		t.Fatalf("a single-event call allocated %d bytes; a batch of 1,000 messages is about 150 KB", perCall)
	}
	publish(300) // the bulk writer
	publish(1)
	publish(65)
	last := publish(1)
	if want := int64(len(evs) - 1); last[0].Offset != want {
		t.Fatalf("the last call's event is at offset %d, want %d: calls did not land in call order", last[0].Offset, want)
	}
	for _, off := range []int{0, singles + 1, singles + 301, len(evs) - 1} {
		got, err := eventlog.FromMessage(readAt(t, topic, 0, int64(off)))
		if err != nil || got.ID != evs[off].ID {
			t.Fatalf("offset %d holds %v (%v), want %s", off, got.ID, err, evs[off].ID)
		}
	}
}
