package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/projector/projector/internal/servers"
)

// Images started when no stack is named in the environment; docker-compose.yml uses
// the same ones (a test checks that they agree).
const (
	KafkaImage    = "apache/kafka:4.1.1"
	PostgresImage = "postgres:16"
	RedisImage    = "redis:7"
	MailpitImage  = "axllent/mailpit:v1.33.1"
)

// startContainers starts the four servers with testcontainers-go. Containers live
// until the test binary exits; testcontainers' reaper removes them.
func startContainers(ctx context.Context) (*Stack, error) {
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return nil, fmt.Errorf("%s unset and no Docker engine: %w", EnvKafkaBrokers, err)
	}
	defer func() { _ = provider.Close() }()
	if err := provider.Health(ctx); err != nil {
		return nil, fmt.Errorf("%s unset and no Docker engine answers: %w", EnvKafkaBrokers, err)
	}
	s := &Stack{Source: "testcontainers"}
	var errs []error
	brokers, err := startKafka(ctx)
	errs = append(errs, err)
	s.KafkaBrokers = []string{brokers}

	pg, err := testcontainers.Run(ctx, PostgresImage,
		testcontainers.WithExposedPorts("5432/tcp"),
		testcontainers.WithEnv(map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"}),
		testcontainers.WithWaitStrategy(wait.ForLog("database system is ready to accept connections").WithOccurrence(2)))
	errs = append(errs, err)
	if err == nil {
		ep, err := pg.PortEndpoint(ctx, "5432/tcp", "")
		errs = append(errs, err)
		s.DatabaseURL = "postgres://postgres@" + ep + "/postgres?sslmode=disable"
	}

	rd, err := testcontainers.Run(ctx, RedisImage,
		testcontainers.WithExposedPorts("6379/tcp"),
		testcontainers.WithCmd("redis-server", "--appendonly", "yes", "--appendfsync", "everysec"),
		testcontainers.WithWaitStrategy(wait.ForListeningPort("6379/tcp")))
	errs = append(errs, err)
	if err == nil {
		ep, err := rd.PortEndpoint(ctx, "6379/tcp", "")
		errs = append(errs, err)
		s.RedisURL = "redis://" + ep + "/0"
	}

	mp, err := testcontainers.Run(ctx, MailpitImage,
		testcontainers.WithExposedPorts("1025/tcp", "8025/tcp"),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/api/v1/info").WithPort("8025/tcp")))
	errs = append(errs, err)
	if err == nil {
		smtp, err1 := mp.PortEndpoint(ctx, "1025/tcp", "")
		api, err2 := mp.PortEndpoint(ctx, "8025/tcp", "http")
		errs = append(errs, err1, err2)
		s.SMTPAddr, s.MailpitURL = smtp, api
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("testcontainers: %w", err)
	}
	return s, nil
}

// kafkaContainerEnv is the container's configuration: internal/servers'
// KafkaSettings, which every Kafka of the project shares, plus the container's
// listeners (the advertised one is set by the start script below).
func kafkaContainerEnv() map[string]string {
	env := servers.KafkaContainerEnv()
	for k, v := range map[string]string{
		"KAFKA_LISTENERS":                      "PLAINTEXT://:9092,CONTROLLER://:9093",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"KAFKA_CONTROLLER_QUORUM_VOTERS":       "1@localhost:9093",
		"KAFKA_HEAP_OPTS":                      "-Xms128m -Xmx" + servers.KafkaHeapDefault,
	} {
		env[k] = v
	}
	return env
}

// startKafka runs apache/kafka in KRaft combined mode. The client listener must
// advertise the host's mapped port, known only once the container runs, so the
// entrypoint waits for a start script copied in after the port is mapped.
func startKafka(ctx context.Context) (string, error) {
	const script = "/tmp/projector-start.sh"
	c, err := testcontainers.Run(ctx, KafkaImage,
		testcontainers.WithExposedPorts("9092/tcp"),
		testcontainers.WithEnv(kafkaContainerEnv()),
		testcontainers.WithEntrypoint("sh", "-c",
			"while [ ! -f "+script+" ]; do sleep 0.1; done; exec sh "+script))
	if err != nil {
		return "", err
	}
	ep, err := c.PortEndpoint(ctx, "9092/tcp", "")
	if err != nil {
		return "", err
	}
	start := "export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://" + ep + "\nexec /etc/kafka/docker/run\n"
	if err := c.CopyToContainer(ctx, []byte(start), script, 0o755); err != nil {
		return "", err
	}
	for {
		d := net.Dialer{Timeout: time.Second}
		if conn, err := d.DialContext(ctx, "tcp", ep); err == nil {
			_ = conn.Close()
			if err := CreateTopic(ctx, []string{ep}, "_projector_stack_probe", 1); err == nil {
				return ep, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("kafka container did not answer at %s: %w", ep, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
