// Command producer publishes events into the log: one event, a JSON-lines file, a
// synthetic workload of the example domain, or an HTTP ingest API for services that
// would rather not speak Kafka.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/eventlog"
)

const usage = `producer publishes events into the log (a Kafka topic that keeps every event).

Usage: producer COMMAND [flags]

Commands:
  send       publish one event, from flags or from CloudEvents JSON
  import     publish JSON-lines events from a file or standard input
  generate   publish a deterministic synthetic workload of the example domain
  serve      run the HTTP ingest API (POST /v1/events, POST /v1/subjects/{id}/forget)
  forget     forget a person: delete their data keys, publish SubjectForgotten
  keygen     print a new master key for the personal-data key store
  check      the log doctor: scan a topic (or a range) for misrouted keys,
             duplicate ids, sequence gaps, swaps and stale sequences, records that
             do not decode, plaintext personal data
  topic      create or describe a topic with the full-history settings

Every command that publishes creates the topic if it is missing (full history:
retention.ms=-1, retention.bytes=-1, cleanup.policy=delete) and refuses a topic
whose settings would delete events. For producers in other languages (kcat,
librdkafka, Java, franz-go): docs/producing.md.

Exit status: 0 on success, 1 on failure (for check: problems found), 2 on bad
usage, 3 when check could not scan.

Personal data: fields an event type marks personal (the example domain: a user's
email and name) are encrypted with AES-256-GCM under the subject's own key before
they are published; the keys live in PostgreSQL, encrypted under the master key
(--master-key, PROJECTOR_MASTER_KEY). Without a master key such events are refused,
unless --plaintext-personal-data.

'producer COMMAND --help' lists a command's flags, each with its default and its
environment variable.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, cli.ErrHelp) {
		fmt.Fprintln(os.Stderr, "producer:", err)
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}

// exitError carries the exit status of a failure other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks a usage error (exit status 2); help asked for stays ErrHelp.
func usageErr(err error) error {
	if err == nil || errors.Is(err, cli.ErrHelp) {
		return err
	}
	return &exitError{code: exitUsage, err: err}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, usage)
		return usageErr(errors.New("no command given"))
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = fmt.Fprint(stdout, usage)
		return nil
	}
	cmds := map[string]func(context.Context, []string, io.Reader, io.Writer, io.Writer) error{
		"send": runSend, "import": runImport, "generate": runGenerate, "serve": runServe,
		"forget": runForget, "keygen": runKeygen, "check": runCheck, "topic": runTopic,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return usageErr(fmt.Errorf("unknown command %q (see producer --help)", args[0]))
	}
	return cmd(ctx, args[1:], stdin, stdout, stderr)
}

// Defaults shared by the commands.
const (
	BrokersDefault = "127.0.0.1:19092"
	TopicDefault   = "users"
)

// common holds the settings every command takes.
type common struct {
	brokers      string
	topic        string
	partitions   int
	source       string
	logLevel     string
	compression  string
	batchTimeout time.Duration
	personal     personal
}

func (c *common) register(f *cli.Flags) {
	f.String(&c.brokers, "brokers", "KAFKA_BROKERS", BrokersDefault, "Kafka brokers, comma-separated host:port")
	f.String(&c.topic, "topic", "PROJECTOR_TOPIC", TopicDefault, "the event topic")
	f.Int(&c.partitions, "partitions", "PROJECTOR_PARTITIONS", eventlog.PartitionsDefault, "partitions when the topic is created")
	f.String(&c.source, "source", "PRODUCER_SOURCE", "producer", "CloudEvents source of events built from flags")
	f.String(&c.logLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	f.String(&c.compression, "compression", "PRODUCER_COMPRESSION", "none", "batch compression: none, gzip, snappy, lz4, zstd")
	f.Duration(&c.batchTimeout, "batch-timeout", "PRODUCER_BATCH_TIMEOUT", eventlog.BatchTimeoutDefault, "how long a partial batch waits for more events")
	c.personal.register(f)
}

// open validates the settings, opens the key store (with a master key), ensures the
// topic and returns a publisher that encrypts personal data, and a logger.
func (c *common) open(ctx context.Context) (*outlet, *zap.Logger, error) {
	log, err := cli.NewLogger(c.logLevel)
	if err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	brokers := cli.SplitList(c.brokers)
	if len(brokers) == 0 {
		return nil, nil, errors.New("--brokers (KAFKA_BROKERS) is empty")
	}
	if c.partitions < 1 {
		return nil, nil, fmt.Errorf("--partitions (PROJECTOR_PARTITIONS) %d: must be at least 1", c.partitions)
	}
	keys, pool, err := c.personal.openKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	closePool := func() {
		if pool != nil {
			pool.Close()
		}
	}
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{
		Brokers: brokers, Topic: c.topic, Compression: c.compression, BatchTimeout: c.batchTimeout, Logger: log,
	})
	if err != nil {
		closePool()
		return nil, nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := eventlog.EnsureTopic(tctx, brokers, eventlog.TopicConfig{Name: c.topic, Partitions: c.partitions})
	if err != nil {
		_ = pub.Close()
		closePool()
		return nil, nil, kafkaErr(brokers, err)
	}
	if info.Created {
		log.Info("created topic", zap.String("topic", info.Name), zap.Int("partitions", info.Partitions))
	}
	o := &outlet{Publisher: pub, kafka: kafkaPublisher{Publisher: pub, brokers: brokers}, pool: pool, reg: registry(), plaintext: c.personal.plaintext}
	if keys != nil {
		o.keys = keys
	}
	return o, log, nil
}
