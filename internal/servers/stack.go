package servers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/projector/projector/pkg/shred"
)

// The shared stack's ports: on loopback, away from the servers' usual ports, the
// same ones docker-compose.yml publishes.
const (
	StackKafkaPortDefault           = 19092
	StackKafkaControllerPortDefault = 19093
	StackRedisPortDefault           = 16379
	StackPGPortDefault              = 15432
	StackSMTPPortDefault            = 11025
	StackMailpitHTTPPortDefault     = 18025
)

// Stack is the shared local stack that scripts/stack.sh runs: the four servers on
// loopback at fixed ports, Lifetime Shared, each in StateDir/NAME with its pid
// file and NAME.log, detached from the command that started them. Up and Down
// hold a lock on StateDir, so two at once take turns.
type Stack struct {
	// StateDir holds the servers' folders, the lock and the env file. Default:
	// /tmp/projector-stack-UID.
	StateDir string
	// CacheDir is where the binaries were installed. Default: CacheDir().
	CacheDir string
	// Ports; each defaults to its Stack…Default.
	KafkaPort, KafkaControllerPort, RedisPort, PGPort, SMTPPort, MailpitHTTPPort int
	// KafkaHeap and KafkaVersion as in Kafka.
	KafkaHeap, KafkaVersion string
	// PGUser as Postgres.OSUser.
	PGUser string
	// Logf reports progress, a line at a time. Default: nothing.
	Logf func(format string, a ...any)
}

// StackFromEnv reads a Stack from the variables scripts/stack.sh documents:
// PROJECTOR_STATE_DIR, PROJECTOR_CACHE_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT,
// REDIS_PORT, PG_PORT, SMTP_PORT, MAILPIT_HTTP_PORT, KAFKA_HEAP, KAFKA_VERSION
// and PG_USER_OS. A port that is not a number is an error naming its variable.
func StackFromEnv(getenv func(string) string) (Stack, error) {
	s := Stack{StateDir: getenv("PROJECTOR_STATE_DIR"), CacheDir: getenv("PROJECTOR_CACHE_DIR"),
		KafkaHeap: getenv("KAFKA_HEAP"), KafkaVersion: getenv("KAFKA_VERSION"), PGUser: getenv("PG_USER_OS")}
	var errs []error
	for _, p := range []struct {
		name string
		dst  *int
	}{
		{"KAFKA_PORT", &s.KafkaPort}, {"KAFKA_CONTROLLER_PORT", &s.KafkaControllerPort}, {"REDIS_PORT", &s.RedisPort},
		{"PG_PORT", &s.PGPort}, {"SMTP_PORT", &s.SMTPPort}, {"MAILPIT_HTTP_PORT", &s.MailpitHTTPPort},
	} {
		v := getenv(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("%s=%q: want a port number", p.name, v))
		}
		*p.dst = n
	}
	return s, errors.Join(errs...)
}

func (s Stack) withDefaults() Stack {
	if s.StateDir == "" {
		s.StateDir = "/tmp/projector-stack-" + strconv.Itoa(os.Getuid())
	}
	if s.CacheDir == "" {
		s.CacheDir = CacheDir()
	}
	for _, p := range []struct {
		dst *int
		def int
	}{
		{&s.KafkaPort, StackKafkaPortDefault}, {&s.KafkaControllerPort, StackKafkaControllerPortDefault},
		{&s.RedisPort, StackRedisPortDefault}, {&s.PGPort, StackPGPortDefault},
		{&s.SMTPPort, StackSMTPPortDefault}, {&s.MailpitHTTPPort, StackMailpitHTTPPortDefault},
	} {
		if *p.dst == 0 {
			*p.dst = p.def
		}
	}
	if s.Logf == nil {
		s.Logf = func(string, ...any) {}
	}
	return s
}

// Servers are the stack's servers, in the order Up starts them.
func (s Stack) Servers() []Server {
	s = s.withDefaults()
	dir := func(name string) string { return filepath.Join(s.StateDir, name) }
	return []Server{
		Kafka{Port: s.KafkaPort, ControllerPort: s.KafkaControllerPort, Dir: dir("kafka"), Heap: s.KafkaHeap,
			Version: s.KafkaVersion, CacheDir: s.CacheDir, Lifetime: Shared},
		Redis{Port: s.RedisPort, Dir: dir("redis"), Lifetime: Shared},
		Postgres{Port: s.PGPort, Dir: dir("postgres"), OSUser: s.PGUser, Lifetime: Shared},
		Mailpit{SMTPPort: s.SMTPPort, HTTPPort: s.MailpitHTTPPort, Dir: dir("mailpit"),
			Binary: filepath.Join(s.CacheDir, "bin", "mailpit")},
	}
}

func (s Stack) pidFile(name string) string { return filepath.Join(s.StateDir, name, "pid") }

// LogFile is where a server of the stack logs.
func (s Stack) LogFile(name string) string { return filepath.Join(s.StateDir, name, name+".log") }

// EnvFile is the file `scripts/stack.sh env` prints.
func (s Stack) EnvFile() string { return filepath.Join(s.withDefaults().StateDir, "env") }

// Pid returns the pid of srv when it runs under this stack's state folder.
func (s Stack) Pid(srv Server) (int, bool) {
	pid := readPid(s.pidFile(srv.Name()))
	return pid, pidRunning(pid, srv.Pattern())
}

// How long a server may take to answer after its start, and to stop after its
// stop signal before it is killed.
func readyTimeout(name string) time.Duration {
	switch name {
	case "kafka":
		return 2 * time.Minute
	case "postgres":
		return time.Minute
	}
	return 30 * time.Second
}

func stopGrace(name string) time.Duration {
	if name == "postgres" {
		return time.Minute
	}
	return 30 * time.Second
}

// Up starts every server that does not run yet (one that runs is left alone),
// waits until each answers, and writes the env file. It holds StateDir/lock
// meanwhile: a second Up waits for the first, then finds everything running.
func (s Stack) Up(ctx context.Context) error {
	s = s.withDefaults()
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil {
		return err
	}
	// As root, PostgreSQL's OS user must reach its folder inside.
	if os.Geteuid() == 0 {
		if err := os.Chmod(s.StateDir, 0o755); err != nil {
			return err
		}
	}
	unlock, err := lockFile(ctx, filepath.Join(s.StateDir, "lock"), s.Logf)
	if err != nil {
		return err
	}
	defer unlock()
	type started struct {
		srv Server
		p   *Process
	}
	var waiting []started
	for _, srv := range s.Servers() {
		if pid, ok := s.Pid(srv); ok {
			s.Logf("%s already running (pid %d)", srv.Name(), pid)
			continue
		}
		p, err := s.start(ctx, srv)
		if err != nil {
			return err
		}
		waiting = append(waiting, started{srv, p})
	}
	var errs []error
	for _, w := range waiting {
		errs = append(errs, WaitReady(ctx, w.srv, w.p, readyTimeout(w.srv.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.writeEnv()
}

func (s Stack) start(ctx context.Context, srv Server) (*Process, error) {
	name := srv.Name()
	if err := srv.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(s.StateDir, name), 0o755); err != nil {
		return nil, err
	}
	if err := srv.Prepare(ctx); err != nil {
		return nil, err
	}
	cmd, err := srv.Command(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	s.Logf("starting %s", describe(srv))
	p, err := StartDetached(name, cmd, s.LogFile(name))
	if err != nil {
		return nil, err
	}
	return p, writeFile(s.pidFile(name), []byte(strconv.Itoa(p.Pid())+"\n"), 0o644)
}

func describe(srv Server) string {
	switch v := srv.(type) {
	case Kafka:
		v = v.withDefaults()
		return fmt.Sprintf("kafka %s on %s", v.Version, v.Brokers()[0])
	case Redis:
		return "redis on " + v.Addr()
	case Postgres:
		return "postgres on " + hostPort(v.withDefaults().Host, v.Port)
	case Mailpit:
		return fmt.Sprintf("mailpit: smtp %s, http %s", v.SMTPAddr(), strings.TrimPrefix(v.APIURL(), "http://"))
	}
	return srv.Name()
}

// Down stops exactly the servers this stack started, by the pids in their pid
// files, in the reverse order of Up; one that ignores its stop signal for a
// while is killed.
func (s Stack) Down(ctx context.Context) error {
	s = s.withDefaults()
	if _, err := os.Stat(s.StateDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	unlock, err := lockFile(ctx, filepath.Join(s.StateDir, "lock"), s.Logf)
	if err != nil {
		return err
	}
	defer unlock()
	servers := s.Servers()
	slices.Reverse(servers)
	for _, srv := range servers {
		name := srv.Name()
		if pid, ok := s.Pid(srv); ok {
			s.Logf("stopping %s (pid %d)", name, pid)
			if stopPid(ctx, pid, srv.Pattern(), srv.StopSignal(), stopGrace(name)) {
				s.Logf("%s (pid %d) ignored %s for %v; killed it", name, pid, SignalName(srv.StopSignal()), stopGrace(name))
			}
		}
		if err := os.Remove(s.pidFile(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Status writes a line per server (running with its pid, or stopped), then the
// env file if there is one. It reports whether every server runs.
func (s Stack) Status(w io.Writer) bool {
	s = s.withDefaults()
	all := true
	for _, srv := range s.Servers() {
		if pid, ok := s.Pid(srv); ok {
			_, _ = fmt.Fprintf(w, "%-9s running  pid %d\n", srv.Name(), pid)
		} else {
			_, _ = fmt.Fprintf(w, "%-9s stopped\n", srv.Name())
			all = false
		}
	}
	if env, err := os.ReadFile(s.EnvFile()); err == nil {
		_, _ = w.Write(env)
	}
	return all
}

// Logs writes the last lines of each server's log.
func (s Stack) Logs(w io.Writer, lines int) {
	s = s.withDefaults()
	for _, srv := range s.Servers() {
		f := s.LogFile(srv.Name())
		if _, err := os.Stat(f); err == nil {
			_, _ = fmt.Fprintf(w, "== %s\n%s\n", f, Tail(f, lines))
		}
	}
}

// Env renders the env file: the endpoints as shell exports, with the names the
// tests and services read, and the personal-data master key.
func (s Stack) Env(masterKey string) string {
	s = s.withDefaults()
	srv := s.Servers()
	k, r, pg, m := srv[0].(Kafka), srv[1].(Redis), srv[2].(Postgres), srv[3].(Mailpit)
	return "export KAFKA_BROKERS=" + strings.Join(k.Brokers(), ",") + "\n" +
		"export DATABASE_URL=" + pg.URL() + "\n" +
		"export REDIS_URL=" + r.URL() + "\n" +
		"export SMTP_ADDR=" + m.SMTPAddr() + "\n" +
		"export MAILPIT_URL=" + m.APIURL() + "\n" +
		"export " + shred.MasterKeyEnv + "=" + masterKey + "\n"
}

// writeEnv writes the env file whole (a reader never sees half of it), with the
// stack's master key: made once, kept beside the PostgreSQL data it protects.
func (s Stack) writeEnv() error {
	path := filepath.Join(s.StateDir, "postgres", "master.key")
	key, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(strings.TrimSpace(string(key))) == 0 {
		key = []byte(shred.NewMasterKey() + "\n")
		if err := writeFile(path, key, 0o600); err != nil {
			return err
		}
	}
	return writeFile(s.EnvFile(), []byte(s.Env(strings.TrimSpace(string(key)))), 0o644)
}

// lockFile takes an exclusive lock on path, waiting (and saying so, once) while
// another process holds it, until ctx ends. The lock goes with the process, so a
// killed holder never leaves it taken. The returned func releases it.
func lockFile(ctx context.Context, path string, logf func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for said := false; ; said = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !said {
			logf("waiting for another scripts/stack.sh up or down (lock %s)", path)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for the lock %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
