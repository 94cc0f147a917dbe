package servers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Redis is a redis-server (7 or newer) from Debian's packages.
type Redis struct {
	// Host is the address it binds. Default: HostDefault. On another address
	// than loopback it runs without protected mode, which would refuse clients
	// from that network (no password is set).
	Host string
	// Port is its port. Required.
	Port int
	// Dir is its working folder (the append-only file of a Shared server).
	// Required.
	Dir string
	// Lifetime picks persistence: a Shared server keeps an append-only file,
	// synced every second; a Private one keeps nothing, so a kill empties it.
	Lifetime Lifetime
}

func (r Redis) withDefaults() Redis {
	if r.Host == "" {
		r.Host = HostDefault
	}
	return r
}

// Name is "redis".
func (Redis) Name() string { return "redis" }

// Pattern is the server's binary name.
func (Redis) Pattern() string { return "redis-server" }

// StopSignal is SIGTERM: it flushes its append-only file and exits.
func (Redis) StopSignal() syscall.Signal { return syscall.SIGTERM }

// Addr is host:port.
func (r Redis) Addr() string {
	r = r.withDefaults()
	return hostPort(r.Host, r.Port)
}

// URL is the redis URL of database 0.
func (r Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Args are redis-server's arguments.
func (r Redis) Args() []string {
	r = r.withDefaults()
	protected := "yes"
	if !isLoopback(r.Host) {
		protected = "no"
	}
	args := []string{"--bind", r.Host, "--port", strconv.Itoa(r.Port), "--dir", r.Dir,
		"--daemonize", "no", "--protected-mode", protected, "--save", ""}
	if r.Lifetime == Shared {
		return append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	}
	return append(args, "--appendonly", "no")
}

var redisVersion = regexp.MustCompile(`v=(\d+)\.`)

// Check finds redis-server and checks it is 7 or newer.
func (Redis) Check() error {
	out, err := exec.CommandContext(context.Background(), "redis-server", "--version").Output()
	if err != nil {
		return fmt.Errorf("redis: redis-server not found (%w): %s", err, installHint)
	}
	m := redisVersion.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("redis: cannot read the version of %q", out)
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 7 {
		return fmt.Errorf("redis: %s is older than 7", bytes.TrimSpace(out))
	}
	return nil
}

// Prepare only checks the description: redis-server makes its files itself.
func (r Redis) Prepare(context.Context) error {
	return required("redis", field{"Port", r.Port == 0}, field{"Dir", r.Dir == ""})
}

// Command is redis-server in the foreground.
func (r Redis) Command(ctx context.Context) (*exec.Cmd, error) {
	if err := r.Prepare(ctx); err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "redis-server", r.Args()...), nil
}

// Ready sends PING and wants PONG, over a plain connection (a client's pool
// would log every refused dial while the server starts).
func (r Redis) Ready(ctx context.Context) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("redis: PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
