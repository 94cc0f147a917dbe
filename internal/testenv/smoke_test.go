package testenv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/smtp"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/projector/projector/internal/testenv"
)

// The smoke tests prove each part of the stack is the real thing, at the version the
// project promises.

func TestKafkaIsApacheKafka4(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	client := testenv.KafkaClient(t)
	resp, err := client.ApiVersions(ctx, &kafka.ApiVersionsRequest{})
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	if resp.Error != nil {
		t.Fatalf("ApiVersions: %v", resp.Error)
	}
	raw := kmsg.NewApiVersionsResponse()
	for _, k := range resp.ApiKeys {
		raw.ApiKeys = append(raw.ApiKeys, kmsg.ApiVersionsResponseApiKey{
			ApiKey: int16(k.ApiKey), MinVersion: int16(k.MinVersion), MaxVersion: int16(k.MaxVersion),
		})
		// KIP-896: Kafka 4.0 removed Fetch v0–v3; every 3.x broker still serves them.
		// (Produce v0–v2 were kept for librdkafka's sake, so Produce proves nothing.)
		if k.ApiKey == 1 && k.MinVersion < 4 {
			t.Fatalf("Fetch min version %d: not a Kafka 4.x broker", k.MinVersion)
		}
	}
	guess := kversion.FromApiVersionsResponse(&raw).VersionGuess()
	t.Logf("broker at %v: Kafka %s by its API versions (%d APIs)", brokers, guess, len(resp.ApiKeys))
	if !strings.Contains(guess, "v4.1") {
		t.Fatalf("broker looks like Kafka %s, want v4.1", guess)
	}
}

func TestKafkaProduceConsumeThroughGroup(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	topic := testenv.Topic(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	w := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		// Not kafka-go's shared DefaultTransport: its metadata cache (6 s) may predate
		// the topic, and the write then fails with Unknown Topic Or Partition. Writer.Close
		// leaves a given transport open: this one closes when the test ends.
		Transport: testenv.Transport(t),
	}
	defer func() { _ = w.Close() }()
	const n = 30
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: topic, GroupID: topic + "_group",
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	seen := map[string]bool{}
	partitions := map[int]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("consume after %d of %d: %v", len(seen), n, err)
		}
		seen[string(m.Value)] = true
		partitions[m.Partition] = true
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	if len(partitions) < 2 {
		t.Fatalf("30 keys landed in %d partition(s) of 3", len(partitions))
	}
}

func TestRedisIsVersion7(t *testing.T) {
	t.Parallel()
	c, prefix := testenv.Redis(t)
	ctx := context.Background()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("INFO server: %v", err)
	}
	var version string
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			version = v
		}
	}
	t.Logf("redis_version %s", version)
	if !strings.HasPrefix(version, "7.") {
		t.Fatalf("redis_version %q, want 7.x", version)
	}
	if err := c.Set(ctx, prefix+"k", "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got := c.Get(ctx, prefix+"k").Val(); got != "v" {
		t.Fatalf("GET = %q", got)
	}
}

func TestPostgresAnswersInOwnSchema(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	var version, current string
	if err := pool.QueryRow(ctx, "SELECT version(), current_schema()").Scan(&version, &current); err != nil {
		t.Fatalf("query: %v", err)
	}
	t.Logf("%s", version)
	if !strings.HasPrefix(version, "PostgreSQL ") {
		t.Fatalf("version() = %q", version)
	}
	if current != schema {
		t.Fatalf("current_schema() = %q, want the test's own %q", current, schema)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE probe (id int PRIMARY KEY)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	var n int
	err := pool.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'probe'",
		schema).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("table not in schema %s: n=%d err=%v", schema, n, err)
	}
}

func TestMailpitReceivesSMTP(t *testing.T) {
	t.Parallel()
	mp := testenv.MailpitServer(t)
	to := testenv.UniqueName(t) + "@example.test"
	subject := "smoke " + testenv.UniqueName(t)
	msg := "From: projector@example.test\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject[6:] + "@projector>\r\n\r\nhello\r\n"
	if err := smtp.SendMail(mp.SMTPAddr, nil, "projector@example.test", []string{to}, []byte(msg)); err != nil {
		t.Fatalf("send over SMTP: %v", err)
	}
	q := mp.APIURL + "/api/v1/search?query=" + url.QueryEscape("to:"+to)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle keep-alive connection (and its goroutines) left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("search API: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		MessagesCount int `json:"messages_count"`
		Messages      []struct {
			Subject   string `json:"Subject"`
			MessageID string `json:"MessageID"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode search: %v", err)
	}
	if body.MessagesCount != 1 || len(body.Messages) != 1 || body.Messages[0].Subject != subject {
		t.Fatalf("mailpit has %+v for %s, want one message %q", body, to, subject)
	}
	if body.Messages[0].MessageID != subject[6:]+"@projector" {
		t.Fatalf("MessageID = %q", body.Messages[0].MessageID)
	}
}
