package servers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/segmentio/kafka-go"
)

// Kafka defaults.
const (
	// KafkaVersionDefault is the Apache Kafka release scripts/stack.sh resolves
	// from Maven Central (its KAFKA_VERSION) and the container image's tag.
	KafkaVersionDefault = "4.1.1"
	// KafkaHeapDefault is the broker JVM's maximum heap: enough for tests on two
	// cores, which the JVM shares with PostgreSQL and the code under test.
	KafkaHeapDefault = "512m"
)

// Kafka is a single-node Apache Kafka broker in KRaft combined mode — broker and
// controller in one process, a static voter — run with Java 17 from the jars
// scripts/stack.sh resolves.
type Kafka struct {
	// Host is the address both listeners bind and the client listener
	// advertises. Default: HostDefault.
	Host string
	// Port is the client (PLAINTEXT) listener's port. Required.
	Port int
	// ControllerPort is the KRaft controller listener's port. Required.
	ControllerPort int
	// Dir holds server.properties, log4j2.xml, format.log and the log folder
	// data/. Required.
	Dir string
	// Heap is the JVM's maximum heap (-Xmx). Default: KafkaHeapDefault.
	Heap string
	// Version picks the jars, CacheDir/kafka-VERSION/lib. Default:
	// $KAFKA_VERSION, else KafkaVersionDefault.
	Version string
	// CacheDir is where the jars are. Default: CacheDir().
	CacheDir string
	// Lifetime picks the JIT: C1 only for a Private broker, which starts sooner
	// and is restarted often; the full JIT for the Shared one, which runs the
	// benchmarks.
	Lifetime Lifetime
}

// KafkaSettings are the broker settings every Kafka the project runs shares —
// the stack's, a private one, or a container (docker-compose.yml and
// testcontainers) — apart from its listeners and folders.
func KafkaSettings() []Setting {
	return []Setting{
		{"process.roles", "broker,controller"},
		{"node.id", "1"},
		{"controller.listener.names", "CONTROLLER"},
		{"num.partitions", "1"},
		// Topics are made on purpose, with their partition count: a typo in a
		// topic name is an error, not a new topic.
		{"auto.create.topics.enable", "false"},
		// One broker: every internal topic has one replica.
		{"offsets.topic.replication.factor", "1"},
		// 12, not the default 50: fewer files and a quicker load after a
		// restart, still room for many groups' coordinators.
		{"offsets.topic.num.partitions", "12"},
		{"transaction.state.log.replication.factor", "1"},
		{"transaction.state.log.min.isr", "1"},
		{"share.coordinator.state.topic.replication.factor", "1"},
		{"share.coordinator.state.topic.min.isr", "1"},
		// The default (3 s) slows every first join of a group.
		{"group.initial.rebalance.delay.ms", "0"},
	}
}

// KafkaContainerEnv renders KafkaSettings as the apache/kafka image reads them:
// KAFKA_ plus the key in capitals, '.' as '_', '_' as "__" and '-' as "___".
func KafkaContainerEnv() map[string]string {
	env := map[string]string{}
	for _, s := range KafkaSettings() {
		env[KafkaContainerVar(s.Key)] = s.Value
	}
	return env
}

// KafkaContainerVar is the apache/kafka image's environment variable for a
// broker setting.
func KafkaContainerVar(key string) string {
	r := strings.NewReplacer("_", "__", "-", "___", ".", "_")
	return "KAFKA_" + strings.ToUpper(r.Replace(key))
}

func (k Kafka) withDefaults() Kafka {
	if k.Host == "" {
		k.Host = HostDefault
	}
	if k.Heap == "" {
		k.Heap = KafkaHeapDefault
	}
	if k.Version == "" {
		k.Version = os.Getenv("KAFKA_VERSION")
	}
	if k.Version == "" {
		k.Version = KafkaVersionDefault
	}
	if k.CacheDir == "" {
		k.CacheDir = CacheDir()
	}
	return k
}

func (k Kafka) validate() error {
	return required("kafka", field{"Port", k.Port == 0}, field{"ControllerPort", k.ControllerPort == 0}, field{"Dir", k.Dir == ""})
}

// Name is "kafka".
func (Kafka) Name() string { return "kafka" }

// Pattern is the broker's main class.
func (Kafka) Pattern() string { return "kafka.Kafka" }

// StopSignal is SIGTERM: a controlled shutdown.
func (Kafka) StopSignal() syscall.Signal { return syscall.SIGTERM }

// Brokers is the bootstrap list.
func (k Kafka) Brokers() []string {
	k = k.withDefaults()
	return []string{hostPort(k.Host, k.Port)}
}

// Properties is the broker's whole server.properties: its listeners and folders,
// then KafkaSettings.
func (k Kafka) Properties() []Setting {
	k = k.withDefaults()
	client, ctrl := hostPort(k.Host, k.Port), hostPort(k.Host, k.ControllerPort)
	return append([]Setting{
		{"controller.quorum.voters", "1@" + ctrl},
		{"listeners", "PLAINTEXT://" + client + ",CONTROLLER://" + ctrl},
		{"advertised.listeners", "PLAINTEXT://" + client},
		{"inter.broker.listener.name", "PLAINTEXT"},
		{"listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"},
		{"log.dirs", filepath.Join(k.Dir, "data")},
	}, KafkaSettings()...)
}

// log4j2 logs Kafka's own classes at info, everything else at warn: enough to
// diagnose a failed start, without the request log.
const log4j2 = `<Configuration status="warn">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Logger name="kafka" level="info"/><Logger name="org.apache.kafka" level="info"/>
    <Logger name="kafka.request.logger" level="warn"/><Logger name="state.change.logger" level="warn"/>
    <Root level="warn"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
`

func (k Kafka) libDir() string { return filepath.Join(k.CacheDir, "kafka-"+k.Version, "lib") }

// jvm is the JVM's arguments; quick trades peak speed for a sooner start.
func (k Kafka) jvm(quick bool) []string {
	args := []string{"-Xms128m", "-Xmx" + k.Heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"}
	if quick {
		args = append(args, "-XX:TieredStopAtLevel=1")
	}
	return append(args, "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+filepath.Join(k.Dir, "log4j2.xml"), "-Dkafka.logs.dir="+k.Dir, "-cp", k.libDir()+"/*")
}

// Check finds java and the jars.
func (k Kafka) Check() error {
	k = k.withDefaults()
	if _, err := exec.LookPath("java"); err != nil {
		return fmt.Errorf("kafka: java (17 or newer) not found: %s", installHint)
	}
	if _, err := os.Stat(filepath.Join(k.libDir(), ".complete")); err != nil {
		return fmt.Errorf("kafka: no jars for Kafka %s in %s: %s", k.Version, k.libDir(), installHint)
	}
	return nil
}

// Prepare writes server.properties and log4j2.xml, and formats the log folder
// with a new cluster id when it holds no meta.properties yet.
func (k Kafka) Prepare(ctx context.Context) error {
	k = k.withDefaults()
	if err := k.validate(); err != nil {
		return err
	}
	data := filepath.Join(k.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	var props strings.Builder
	for _, s := range k.Properties() {
		fmt.Fprintf(&props, "%s=%s\n", s.Key, s.Value)
	}
	if err := writeFile(filepath.Join(k.Dir, "server.properties"), []byte(props.String()), 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(k.Dir, "log4j2.xml"), []byte(log4j2), 0o644); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(data, "meta.properties")); err == nil {
		return nil
	}
	return k.format(ctx)
}

func (k Kafka) format(ctx context.Context) error {
	logPath := filepath.Join(k.Dir, "format.log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = out.Close() }()
	// The storage tool is a short-lived JVM whatever the broker's lifetime.
	cmd := exec.CommandContext(ctx, "java", append(k.jvm(true), "kafka.tools.StorageTool", "format",
		"-t", NewClusterID(), "-c", filepath.Join(k.Dir, "server.properties"))...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kafka storage format: %w; the end of %s:\n%s", err, logPath, Tail(logPath, 20))
	}
	return nil
}

// NewClusterID returns a random KRaft cluster id as Kafka's Uuid.randomUuid makes
// one: 16 random bytes in URL-safe base64 without padding, never starting with
// '-' (the storage tool would read such an id as a flag) and never all zeros.
func NewClusterID() string {
	for {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id := base64.RawURLEncoding.EncodeToString(b[:])
		if id[0] != '-' && b != [16]byte{} {
			return id
		}
	}
}

// Command is the broker: java … kafka.Kafka server.properties.
func (k Kafka) Command(ctx context.Context) (*exec.Cmd, error) {
	k = k.withDefaults()
	if err := k.validate(); err != nil {
		return nil, err
	}
	args := append(k.jvm(k.Lifetime == Private), "kafka.Kafka", filepath.Join(k.Dir, "server.properties"))
	return exec.CommandContext(ctx, "java", args...), nil
}

// Ready asks for the cluster's metadata: ready means a broker and an elected
// controller.
func (k Kafka) Ready(ctx context.Context) error {
	k = k.withDefaults()
	if !PortOpen(ctx, k.Host, k.Port) {
		return fmt.Errorf("kafka: nothing listens on %s", hostPort(k.Host, k.Port))
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers()...), Transport: tr}
	m, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return fmt.Errorf("kafka metadata: %w", err)
	}
	if len(m.Brokers) == 0 || m.Controller.ID < 0 {
		return errors.New("kafka: no broker or no controller yet")
	}
	return nil
}
