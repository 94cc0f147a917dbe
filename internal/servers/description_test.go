package servers

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func settingsMap(t *testing.T, settings []Setting) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, s := range settings {
		_, dup := m[s.Key]
		require.False(t, dup, "setting %s twice", s.Key)
		m[s.Key] = s.Value
	}
	return m
}

func TestKafkaProperties(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"", "10.231.101.1"} {
		k := Kafka{Host: host, Port: 4001, ControllerPort: 4002, Dir: "/x/kafka"}
		p := settingsMap(t, k.Properties())
		h := host
		if h == "" {
			h = HostDefault
		}
		require.Equal(t, "1@"+h+":4002", p["controller.quorum.voters"])
		require.Equal(t, "PLAINTEXT://"+h+":4001,CONTROLLER://"+h+":4002", p["listeners"])
		require.Equal(t, "PLAINTEXT://"+h+":4001", p["advertised.listeners"])
		require.Equal(t, "/x/kafka/data", p["log.dirs"])
		require.Equal(t, []string{h + ":4001"}, k.Brokers())
		for _, s := range KafkaSettings() {
			require.Equal(t, s.Value, p[s.Key], s.Key)
		}
	}
	p := settingsMap(t, KafkaSettings())
	// The settings the project relies on (docs: shared/notes/kafka.md).
	for k, v := range map[string]string{
		"process.roles": "broker,controller", "auto.create.topics.enable": "false",
		"group.initial.rebalance.delay.ms": "0", "offsets.topic.replication.factor": "1",
		"transaction.state.log.min.isr": "1",
	} {
		require.Equal(t, v, p[k], k)
	}
}

func TestKafkaJITFollowsLifetime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for lt, want := range map[Lifetime]bool{Private: true, Shared: false} {
		cmd, err := Kafka{Port: 1, ControllerPort: 2, Dir: "/k", Lifetime: lt, Heap: "300m"}.Command(ctx)
		require.NoError(t, err)
		require.Equal(t, want, slices.Contains(cmd.Args, "-XX:TieredStopAtLevel=1"), lt)
		require.Contains(t, cmd.Args, "-Xmx300m")
		require.Equal(t, []string{"kafka.Kafka", "/k/server.properties"}, cmd.Args[len(cmd.Args)-2:])
	}
}

func TestKafkaContainerVar(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"offsets.topic.num.partitions":     "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS",
		"group.initial.rebalance.delay.ms": "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
		"a_b-c.d":                          "KAFKA_A__B___C_D",
	} {
		require.Equal(t, want, KafkaContainerVar(key))
	}
	require.Equal(t, "false", KafkaContainerEnv()["KAFKA_AUTO_CREATE_TOPICS_ENABLE"])
}

// The storage tool reads an id that starts with '-' as a flag; Kafka's own
// Uuid.randomUuid never makes one, and neither may we (1 in 64 random ids does).
func TestNewClusterID(t *testing.T) {
	t.Parallel()
	for range 5000 {
		id := NewClusterID()
		require.Len(t, id, 22)
		require.NotEqual(t, byte('-'), id[0], id)
		b, err := base64.RawURLEncoding.DecodeString(id)
		require.NoError(t, err)
		require.Len(t, b, 16)
	}
}

func TestPostgresFollowsLifetimeAndHost(t *testing.T) {
	t.Parallel()
	private := settingsMap(t, Postgres{Port: 5, Dir: "/p"}.Settings())
	shared := settingsMap(t, Postgres{Port: 5, Dir: "/p", Lifetime: Shared}.Settings())
	require.Equal(t, "off", private["fsync"])
	require.Equal(t, "96MB", private["max_wal_size"])
	require.Equal(t, "100", private["max_connections"])
	require.Equal(t, "on", shared["fsync"])
	require.Equal(t, "200", shared["max_connections"])
	require.NotContains(t, shared, "max_wal_size")
	for _, m := range []map[string]string{private, shared} {
		require.Equal(t, HostDefault, m["listen_addresses"])
		require.Equal(t, "5", m["port"])
		require.Equal(t, "/p", m["unix_socket_directories"])
	}
	require.Contains(t, Postgres{Dir: "/p"}.InitdbArgs(), "--no-sync")
	require.NotContains(t, Postgres{Dir: "/p", Lifetime: Shared}.InitdbArgs(), "--no-sync")
	require.Empty(t, Postgres{}.HBA())
	require.Equal(t, "host all all 10.231.101.1/8 trust\n", Postgres{Host: "10.231.101.1"}.HBA())
	require.Equal(t, "postgres://postgres@127.0.0.1:5/postgres?sslmode=disable", Postgres{Port: 5}.URL())
	for mode, ok := range map[string]bool{"smart": true, "fast": true, "immediate": true, "quick": false} {
		_, err := PGStopSignal(mode)
		require.Equal(t, ok, err == nil, mode)
	}
}

func TestRedisFollowsLifetimeAndHost(t *testing.T) {
	t.Parallel()
	arg := func(args []string, name string) string {
		i := slices.Index(args, name)
		require.GreaterOrEqual(t, i, 0, name)
		return args[i+1]
	}
	private := Redis{Port: 7, Dir: "/r"}.Args()
	shared := Redis{Port: 7, Dir: "/r", Lifetime: Shared}.Args()
	require.Equal(t, "no", arg(private, "--appendonly"))
	require.Equal(t, "yes", arg(shared, "--appendonly"))
	require.Equal(t, "everysec", arg(shared, "--appendfsync"))
	require.Empty(t, arg(private, "--save"))
	require.Equal(t, "yes", arg(private, "--protected-mode"))
	require.Equal(t, "no", arg(Redis{Host: "10.0.0.1", Port: 7, Dir: "/r"}.Args(), "--protected-mode"))
}

func TestMailpitKeepsTheNewest200000Messages(t *testing.T) {
	t.Parallel()
	m := Mailpit{SMTPPort: 1, HTTPPort: 2, Dir: "/m", Binary: "/bin/mailpit", Extra: []string{"--x"}}
	args := m.Args()
	require.Equal(t, "200000", args[slices.Index(args, "--max")+1])
	require.Equal(t, "--x", args[len(args)-1])
	require.Equal(t, "127.0.0.1:1", m.SMTPAddr())
	require.Equal(t, "http://127.0.0.1:2", m.APIURL())
}

func TestRequiredFieldsAreNamed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, err := Kafka{}.Command(ctx)
	require.ErrorContains(t, err, "kafka: Port is required")
	require.ErrorContains(t, err, "kafka: Dir is required")
	require.ErrorContains(t, Redis{Port: 1}.Prepare(ctx), "redis: Dir is required")
	require.ErrorContains(t, Mailpit{Dir: "/m", SMTPPort: 1}.Prepare(ctx), "mailpit: HTTPPort is required")
	_, err = Postgres{Dir: "/p"}.Command(ctx)
	require.ErrorContains(t, err, "postgres: Port is required")
}

// The env file scripts/stack.sh env prints, as Makefile and CI eval it.
func TestStackEnv(t *testing.T) {
	t.Parallel()
	want := `export KAFKA_BROKERS=127.0.0.1:19092
export DATABASE_URL=postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable
export REDIS_URL=redis://127.0.0.1:16379/0
export SMTP_ADDR=127.0.0.1:11025
export MAILPIT_URL=http://127.0.0.1:18025
export PROJECTOR_MASTER_KEY=KEY
`
	require.Equal(t, want, Stack{}.Env("KEY"))
	s, err := StackFromEnv(env{"KAFKA_PORT": "29092", "PG_PORT": "25432"}.get)
	require.NoError(t, err)
	require.Contains(t, s.Env("K"), "KAFKA_BROKERS=127.0.0.1:29092\n")
	require.Contains(t, s.Env("K"), "@127.0.0.1:25432/")
	_, err = StackFromEnv(env{"REDIS_PORT": "six"}.get)
	require.ErrorContains(t, err, `REDIS_PORT="six"`)
}

type env map[string]string

func (e env) get(k string) string { return e[k] }

func TestStackServersAreShared(t *testing.T) {
	t.Parallel()
	s := Stack{StateDir: "/s"}
	names := []string{}
	for _, srv := range s.Servers() {
		names = append(names, srv.Name())
		switch v := srv.(type) {
		case Kafka:
			require.Equal(t, Shared, v.Lifetime)
			require.Equal(t, "/s/kafka", v.Dir)
		case Redis:
			require.Equal(t, Shared, v.Lifetime)
		case Postgres:
			require.Equal(t, Shared, v.Lifetime)
			require.Equal(t, "/s/postgres", v.Dir)
		}
	}
	require.Equal(t, []string{"kafka", "redis", "postgres", "mailpit"}, names)
	require.Equal(t, "/s/env", s.EnvFile())
	require.Equal(t, "/s/kafka/kafka.log", s.LogFile("kafka"))
}

// Two holders of the state folder's lock take turns, in one process as in two.
func TestLockFileTakesTurns(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lock")
	ctx := context.Background()
	unlock, err := lockFile(ctx, path, t.Logf)
	require.NoError(t, err)
	waited := make(chan string, 1)
	got := make(chan struct{})
	go func() {
		unlock2, err := lockFile(ctx, path, func(f string, a ...any) { waited <- f })
		if err == nil {
			unlock2()
		}
		close(got)
	}()
	require.Contains(t, <-waited, "waiting for another")
	select {
	case <-got:
		t.Fatal("the second holder got the lock while the first held it")
	case <-time.After(300 * time.Millisecond):
	}
	unlock()
	<-got
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	unlock, err = lockFile(short, path, t.Logf)
	require.NoError(t, err)
	unlock()
}

func TestPidRunning(t *testing.T) {
	t.Parallel()
	require.True(t, pidRunning(os.Getpid(), "servers.test"))
	require.False(t, pidRunning(os.Getpid(), "no such program"))
	require.False(t, pidRunning(0, ""))
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pid"), []byte("123\n"), 0o644))
	require.Equal(t, 123, readPid(filepath.Join(dir, "pid")))
	require.Equal(t, 0, readPid(filepath.Join(dir, "none")))
}
