package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// CacheDir is where scripts/stack.sh installed Kafka's jars and Mailpit.
func CacheDir() string {
	if d := os.Getenv("PROJECTOR_CACHE_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "projector")
}

// Kafka is a private single-node KRaft broker (combined mode, static voter) the
// suite starts, kills and restarts on the same log folder.
type Kafka struct {
	Host     string
	Port     int
	ctrlPort int
	dir      string
	sup      *Supervisor
	proc     *Proc
	name     string
}

// StartKafka formats a log folder under dir and starts a broker on host.
func StartKafka(ctx context.Context, sup *Supervisor, name, host, dir string) (*Kafka, error) {
	k := &Kafka{Host: host, dir: dir, sup: sup, name: name}
	var err error
	if k.Port, err = FreePort(ctx, host); err != nil {
		return nil, err
	}
	if k.ctrlPort, err = FreePort(ctx, host); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@%[1]s:%[3]d
listeners=PLAINTEXT://%[1]s:%[2]d,CONTROLLER://%[1]s:%[3]d
advertised.listeners=PLAINTEXT://%[1]s:%[2]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=%[4]s/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
`, host, k.Port, k.ctrlPort, dir)
	if err := os.WriteFile(filepath.Join(dir, "server.properties"), []byte(props), 0o644); err != nil {
		return nil, err
	}
	log4j := `<Configuration status="warn"><Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
<Loggers><Logger name="kafka" level="info"/><Logger name="org.apache.kafka" level="warn"/><Logger name="kafka.request.logger" level="warn"/><Logger name="state.change.logger" level="warn"/>
<Root level="warn"><AppenderRef ref="out"/></Root></Loggers></Configuration>`
	if err := os.WriteFile(filepath.Join(dir, "log4j2.xml"), []byte(log4j), 0o644); err != nil {
		return nil, err
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	cmd := exec.CommandContext(ctx, "java", append(k.jvm(), "kafka.tools.StorageTool", "format", "-t",
		base64.RawURLEncoding.EncodeToString(id[:]), "-c", filepath.Join(dir, "server.properties"))...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kafka storage format: %w\n%s", err, out)
	}
	return k, k.Start(ctx)
}

func (k *Kafka) jvm() []string {
	lib := filepath.Join(CacheDir(), "kafka-"+kafkaVersion(), "lib")
	return []string{"-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true", "-Dlog4j2.configurationFile=" + filepath.Join(k.dir, "log4j2.xml"),
		"-Dkafka.logs.dir=" + k.dir, "-cp", lib + "/*"}
}

func kafkaVersion() string {
	if v := os.Getenv("KAFKA_VERSION"); v != "" {
		return v
	}
	return "4.1.1"
}

// Brokers is the bootstrap list.
func (k *Kafka) Brokers() []string { return []string{net.JoinHostPort(k.Host, strconv.Itoa(k.Port))} }

// Start starts the broker on its log folder and waits until it serves metadata.
func (k *Kafka) Start(ctx context.Context) error {
	p, err := k.sup.Start(k.name, exec.CommandContext(context.WithoutCancel(ctx), "java", append(k.jvm(), "kafka.Kafka", filepath.Join(k.dir, "server.properties"))...))
	if err != nil {
		return err
	}
	k.proc = p
	return WaitFor(ctx, 2*time.Minute, "kafka "+k.name+" to serve metadata", func() bool {
		if !p.Alive() {
			return true
		}
		return k.ready(ctx)
	})
}

func (k *Kafka) ready(ctx context.Context) bool {
	if !PortOpen(ctx, k.Host, k.Port) {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers()...), Transport: tr}
	m, err := c.Metadata(cctx, &kafka.MetadataRequest{})
	return err == nil && len(m.Brokers) > 0 && m.Controller.ID >= 0
}

// Kill ends the broker with SIGKILL, by pid.
func (k *Kafka) Kill() {
	if k.proc != nil {
		k.proc.Kill()
	}
}

// Proc is the running broker process.
func (k *Kafka) Proc() *Proc { return k.proc }

// Postgres is a private PostgreSQL server run as the stack's unprivileged OS user.
type Postgres struct {
	Host string
	Port int
	bin  string
	dir  string // holds data/, the socket and the log
	sup  *Supervisor
}

// StartPostgres runs initdb in dir/data and starts the server on host.
func StartPostgres(ctx context.Context, sup *Supervisor, host, dir string) (*Postgres, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, errors.New("no PostgreSQL binaries under /usr/lib/postgresql: run scripts/stack.sh up")
	}
	sort.Strings(bins)
	pg := &Postgres{Host: host, bin: filepath.Dir(bins[len(bins)-1]), dir: dir, sup: sup}
	var err error
	if pg.Port, err = FreePort(ctx, host); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := chownToPG(dir); err != nil {
		return nil, err
	}
	if out, err := pg.command(ctx, "initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	// initdb trusts loopback only; the network-cut scenario connects over a veth pair.
	hba, err := os.OpenFile(filepath.Join(dir, "data", "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = hba.WriteString("host all all " + host + "/8 trust\n")
	if cerr := hba.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return pg, pg.Start(ctx)
}

func pgUser() string {
	if u := os.Getenv("PG_USER_OS"); u != "" {
		return u
	}
	return "projector-pg"
}

func chownToPG(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(pgUser())
	if err != nil {
		return fmt.Errorf("user %s (made by scripts/stack.sh up): %w", pgUser(), err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

// URL is the connection URL of database postgres.
func (pg *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5", net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
}

// Start starts the server and waits until it accepts connections.
func (pg *Postgres) Start(ctx context.Context) error {
	opts := fmt.Sprintf("-c listen_addresses=%s -p %d -k %s -c fsync=off -c max_connections=100 -c max_wal_size=96MB -c min_wal_size=32MB", pg.Host, pg.Port, pg.dir)
	if out, err := pg.command(ctx, "pg_ctl", "-D", filepath.Join(pg.dir, "data"), "start", "-w", "-t", "60",
		"-l", filepath.Join(pg.dir, "log"), "-o", opts).CombinedOutput(); err != nil {
		return fmt.Errorf("start private PostgreSQL: %w\n%s\n%s", err, out, Tail(filepath.Join(pg.dir, "log"), 20))
	}
	return nil
}

// Stop stops the server: "fast" or "immediate" (as a crash).
func (pg *Postgres) Stop(ctx context.Context, mode string) error {
	if out, err := pg.command(ctx, "pg_ctl", "-D", filepath.Join(pg.dir, "data"), "stop", "-w", "-t", "60", "-m", mode).CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop -m %s: %w\n%s", mode, err, out)
	}
	return nil
}

// Log is the server's log file.
func (pg *Postgres) Log() string { return filepath.Join(pg.dir, "log") }

// Exec runs statements on a fresh connection.
func (pg *Postgres) Exec(ctx context.Context, sql ...string) error {
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func (pg *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := filepath.Join(pg.bin, name)
	if os.Geteuid() == 0 {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", pgUser(), "--", path}, args...)...)
	}
	return exec.CommandContext(ctx, path, args...)
}

// Redis is a private redis-server without persistence: killed, it comes back empty.
type Redis struct {
	Host string
	Port int
	dir  string
	sup  *Supervisor
	proc *Proc
}

// StartRedis starts redis-server on host.
func StartRedis(ctx context.Context, sup *Supervisor, host, dir string) (*Redis, error) {
	r := &Redis{Host: host, dir: dir, sup: sup}
	var err error
	if r.Port, err = FreePort(ctx, host); err != nil {
		return nil, err
	}
	return r, r.Start(ctx)
}

// Addr is host:port.
func (r *Redis) Addr() string { return net.JoinHostPort(r.Host, strconv.Itoa(r.Port)) }

// URL is the redis URL.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start starts the server (again) and waits for PING.
func (r *Redis) Start(ctx context.Context) error {
	p, err := r.sup.Start("redis", exec.CommandContext(context.WithoutCancel(ctx), "redis-server", "--bind", r.Host, "--port", strconv.Itoa(r.Port),
		"--dir", r.dir, "--save", "", "--appendonly", "no", "--protected-mode", "no"))
	if err != nil {
		return err
	}
	r.proc = p
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer func() { _ = c.Close() }()
	return WaitFor(ctx, 30*time.Second, "redis PING", func() bool { return c.Ping(ctx).Err() == nil })
}

// Kill ends the server with SIGKILL, by pid.
func (r *Redis) Kill() {
	if r.proc != nil {
		r.proc.Kill()
	}
}

// Client returns a new client; the caller closes it.
func (r *Redis) Client() *redis.Client { return redis.NewClient(&redis.Options{Addr: r.Addr()}) }

// Mailpit is a private Mailpit: the effects' SMTP sink, with an HTTP API to count
// deliveries by Message-ID.
type Mailpit struct {
	Host     string
	SMTPPort int
	HTTPPort int
}

// StartMailpit starts Mailpit on host.
func StartMailpit(ctx context.Context, sup *Supervisor, host, dir string) (*Mailpit, error) {
	m := &Mailpit{Host: host}
	var err error
	if m.SMTPPort, err = FreePort(ctx, host); err != nil {
		return nil, err
	}
	if m.HTTPPort, err = FreePort(ctx, host); err != nil {
		return nil, err
	}
	bin := filepath.Join(CacheDir(), "bin", "mailpit")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("mailpit binary: %w (run scripts/stack.sh up)", err)
	}
	p, err := sup.Start("mailpit", exec.CommandContext(context.WithoutCancel(ctx), bin, "--smtp", m.SMTPAddr(), "--listen", net.JoinHostPort(host, strconv.Itoa(m.HTTPPort)),
		"--disable-version-check", "--smtp-disable-rdns", "--max", "0", "--database", filepath.Join(dir, "mailpit.db")))
	if err != nil {
		return nil, err
	}
	return m, WaitFor(ctx, 30*time.Second, "mailpit", func() bool {
		return !p.Alive() || (PortOpen(ctx, host, m.HTTPPort) && PortOpen(ctx, host, m.SMTPPort))
	})
}

// SMTPAddr is host:port of its SMTP server.
func (m *Mailpit) SMTPAddr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.SMTPPort)) }

// APIURL is the base URL of its HTTP API.
func (m *Mailpit) APIURL() string {
	return "http://" + net.JoinHostPort(m.Host, strconv.Itoa(m.HTTPPort))
}
