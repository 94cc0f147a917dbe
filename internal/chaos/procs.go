package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one process the suite started. It is signalled by its pid only — never by
// name — and Supervisor.Close ends every process still running.
type Proc struct {
	Name string
	Log  string // path of its combined stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Supervisor owns the processes of one scenario (or of the suite's base servers).
type Supervisor struct {
	mu    sync.Mutex
	procs []*Proc
	dir   string // logs go here
}

// NewSupervisor returns a supervisor whose processes log into dir.
func NewSupervisor(dir string) *Supervisor { return &Supervisor{dir: dir} }

// Start runs name's command in its own process group, logging to dir/name.log
// (appended, so restarts keep one log).
func (s *Supervisor) Start(name string, cmd *exec.Cmd) (*Proc, error) {
	log := s.dir + "/" + name + ".log"
	out, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() { _ = out.Close() }()
	_, _ = fmt.Fprintf(out, "---- chaos: start %s at %s: %s\n", name, time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: log, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Alive reports whether the process has not exited.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the process exits, and its error after.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Err is the process's exit error once Exited is closed.
func (p *Proc) Err() error { return p.err }

// Signal sends sig to the process (by pid).
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return errors.New(p.Name + " is not running")
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL (after SIGCONT, so a stopped process dies too) and waits.
func (p *Proc) Kill() {
	if p.Alive() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Term sends SIGTERM and waits up to d for the exit, then kills. It returns the
// exit error (nil on a clean exit) or an error saying it had to kill.
func (p *Proc) Term(d time.Duration) error {
	if !p.Alive() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.Kill()
		return fmt.Errorf("%s ignored SIGTERM for %v: killed", p.Name, d)
	}
}

// Close kills every process still running.
func (s *Supervisor) Close() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
}

// Tail returns the last n lines of a log file.
func Tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a port free on host at the time of asking.
func FreePort(ctx context.Context, host string) (int, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PortOpen reports whether something accepts connections on host:port.
func PortOpen(ctx context.Context, host string, port int) bool {
	c, err := (&net.Dialer{Timeout: 500 * time.Millisecond}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// WaitFor polls cond every 50 ms until it holds or d passes.
func WaitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
