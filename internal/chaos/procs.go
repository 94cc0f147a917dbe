package chaos

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/projector/projector/internal/servers"
)

// Proc is one process the suite started. It is signalled by its pid only — never by
// name — and Supervisor.Close ends every process still running.
type Proc = servers.Process

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
	p, err := servers.StartProcess(name, cmd, filepath.Join(s.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
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
func Tail(path string, n int) string { return servers.Tail(path, n) }

// FreePort returns a port free on host at the time of asking.
func FreePort(ctx context.Context, host string) (int, error) { return servers.FreePort(ctx, host) }

// PortOpen reports whether something accepts connections on host:port.
func PortOpen(ctx context.Context, host string, port int) bool {
	return servers.PortOpen(ctx, host, port)
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
