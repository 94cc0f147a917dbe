// Command stackprobe checks that the local stack really answers: Kafka serves
// metadata and creates a topic, PostgreSQL answers a query, Redis answers PING and
// Mailpit's API answers. scripts/stack.sh runs it after starting the servers; it
// reads the endpoints from the same environment variables the tests use.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// probeTopic is created (if missing) to prove the broker accepts topic creation.
const probeTopic = "_projector_stack_probe"

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	err := run(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stackprobe:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	checks := []struct {
		name string
		fn   func(context.Context) (string, error)
	}{
		{"kafka", probeKafka},
		{"postgres", probePostgres},
		{"redis", probeRedis},
		{"mailpit", probeMailpit},
	}
	var errs []error
	for _, c := range checks {
		detail, err := retry(ctx, c.fn)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
			continue
		}
		fmt.Fprintf(os.Stderr, "stack: %-8s ok  %s\n", c.name, detail)
	}
	return errors.Join(errs...)
}

// retry calls fn until it succeeds or ctx ends: a server whose port is open may still
// be finishing its start (Kafka elects its controller, PostgreSQL replays WAL).
func retry(ctx context.Context, fn func(context.Context) (string, error)) (string, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		detail, err := fn(attempt)
		cancel()
		if err == nil {
			return detail, nil
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func env(name string) (string, error) {
	v := os.Getenv(name)
	if v == "" {
		return "", fmt.Errorf("%s is not set", name)
	}
	return v, nil
}

func probeKafka(ctx context.Context) (string, error) {
	brokers, err := env("KAFKA_BROKERS")
	if err != nil {
		return "", err
	}
	conn, err := kafka.DialContext(ctx, "tcp", brokers)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	controller, err := conn.Controller()
	if err != nil {
		return "", fmt.Errorf("metadata: %w", err)
	}
	cc, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		return "", err
	}
	defer func() { _ = cc.Close() }()
	err = cc.CreateTopics(kafka.TopicConfig{Topic: probeTopic, NumPartitions: 1, ReplicationFactor: 1})
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return "", fmt.Errorf("create topic: %w", err)
	}
	parts, err := conn.ReadPartitions(probeTopic)
	if err != nil {
		return "", fmt.Errorf("metadata for %s: %w", probeTopic, err)
	}
	if len(parts) == 0 || parts[0].Leader.Port == 0 {
		return "", fmt.Errorf("topic %s has no leader yet", probeTopic)
	}
	return fmt.Sprintf("%s (controller %d, topic %s)", brokers, controller.ID, probeTopic), nil
}

func probePostgres(ctx context.Context) (string, error) {
	url, err := env("DATABASE_URL")
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(ctx) }()
	var version string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return "", err
	}
	return "PostgreSQL " + version, nil
}

func probeRedis(ctx context.Context) (string, error) {
	url, err := env("REDIS_URL")
	if err != nil {
		return "", err
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return "", err
	}
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	if err := c.Ping(ctx).Err(); err != nil {
		return "", err
	}
	return url, nil
}

func probeMailpit(ctx context.Context) (string, error) {
	base, err := env("MAILPIT_URL")
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/info", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /api/v1/info: %s", resp.Status)
	}
	return base, nil
}
