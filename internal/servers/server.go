package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Lifetime says what a server is for. It is the only switch between the shared
// stack's servers and private ones; see the package documentation for what it
// changes.
type Lifetime int

const (
	// Private is a throw-away server of one test or scenario: fast to start, not
	// durable (no fsync; Redis keeps nothing across a kill). The zero value.
	Private Lifetime = iota
	// Shared is the long-lived local stack: durable, tuned for throughput, with
	// room for many parallel test packages.
	Shared
)

func (l Lifetime) String() string {
	if l == Shared {
		return "shared"
	}
	return "private"
}

// HostDefault is the address a server binds when its Host is empty.
const HostDefault = "127.0.0.1"

// installHint ends every error about a missing binary.
const installHint = "run scripts/stack.sh up to install it"

// Server is what every description implements: enough to check, configure, start,
// wait for and stop it.
type Server interface {
	// Name is the server's short name: kafka, postgres, redis or mailpit.
	Name() string
	// Check reports a missing binary, with how to install it.
	Check() error
	// Prepare writes the configuration and initialises the data folder when it
	// is new (Kafka's storage format, PostgreSQL's initdb); existing data is kept.
	Prepare(ctx context.Context) error
	// Command is the server in the foreground. It lives as long as ctx: pass
	// context.WithoutCancel(ctx) for a server that outlives the call.
	Command(ctx context.Context) (*exec.Cmd, error)
	// Ready checks once whether the server answers its clients.
	Ready(ctx context.Context) error
	// Pattern is a text its command line contains, so that a pid reused by
	// another program is never taken for the server.
	Pattern() string
	// StopSignal asks the server to stop cleanly.
	StopSignal() syscall.Signal
}

// Setting is one key and value of a server's configuration, kept in order.
type Setting struct{ Key, Value string }

// WaitReady polls s.Ready every 100 ms until the server answers, its process
// exits, timeout passes or ctx ends. The error quotes the tail of its log.
func WaitReady(ctx context.Context, s Server, p *Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.Ready(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if !p.Alive() {
			exit := p.Err()
			if exit == nil {
				exit = errors.New("exit status 0")
			}
			return fmt.Errorf("%s exited while starting (%w); the end of %s:\n%s", s.Name(), exit, p.Log, Tail(p.Log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %v: %w; the end of %s:\n%s", s.Name(), timeout, err, p.Log, Tail(p.Log, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", s.Name(), ctx.Err())
		case <-p.Exited():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Start prepares s, starts it in its own process group logging to logPath, and
// waits until it answers (or timeout passes). The process is the caller's to stop.
func Start(ctx context.Context, s Server, logPath string, timeout time.Duration) (*Process, error) {
	if err := s.Prepare(ctx); err != nil {
		return nil, err
	}
	cmd, err := s.Command(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	p, err := StartProcess(s.Name(), cmd, logPath)
	if err != nil {
		return nil, err
	}
	if err := WaitReady(ctx, s, p, timeout); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// CacheDir is where scripts/stack.sh installs Kafka's jars and Mailpit:
// $PROJECTOR_CACHE_DIR, else $HOME/.cache/projector.
func CacheDir() string {
	if d := os.Getenv("PROJECTOR_CACHE_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "projector")
}

// FreePort returns a port free on host at the time of asking.
func FreePort(ctx context.Context, host string) (int, error) {
	ports, err := FreePorts(ctx, host, 1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// FreePorts returns n distinct ports free on host at the time of asking. Each is held
// until all are picked: ports asked for one at a time may come back the same, a port
// closed being free to hand out again (seen: a broker's listener and its controller
// given one port, which Kafka refuses).
func FreePorts(ctx context.Context, host string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		defer func() { _ = l.Close() }()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// PortOpen reports whether something accepts connections on host:port.
func PortOpen(ctx context.Context, host string, port int) bool {
	c, err := (&net.Dialer{Timeout: 500 * time.Millisecond}).DialContext(ctx, "tcp", hostPort(host, port))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// Tail returns the last n lines of a file ("" when it cannot be read).
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }

// isLoopback reports whether host is a loopback address (or localhost).
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// field is one required field of a description and whether it is unset.
type field struct {
	name    string
	missing bool
}

// required names, in order, the fields of a description that are unset.
func required(server string, fields ...field) error {
	var errs []error
	for _, f := range fields {
		if f.missing {
			errs = append(errs, fmt.Errorf("%s: %s is required", server, f.name))
		}
	}
	return errors.Join(errs...)
}

// writeFile writes data to path through a temporary file and a rename, so that a
// reader never sees half of it.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}
