package servers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one process a caller started. It is signalled by its pid only —
// never by name — and reaped by a goroutine of its own, which ends with it.
type Process struct {
	Name string
	Log  string // path of its combined stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess runs cmd in its own process group, appending its stdout and stderr
// to logPath after a line that names it, so that restarts keep one log.
func StartProcess(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	return start(name, cmd, logPath, false)
}

// StartDetached runs cmd in a session of its own, so that it outlives the caller
// and a terminal's Ctrl-C; otherwise as StartProcess. It inherits no descriptor
// but its log: one its caller inherited (a make jobserver's pipe, a caller's
// lock, a pipe someone reads to its end) would stay open as long as it runs.
func StartDetached(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	closeInherited()
	return start(name, cmd, logPath, true)
}

// closeInherited marks every descriptor above stderr close-on-exec (Go marks its
// own; these came from the process's parent).
func closeInherited() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

func start(name string, cmd *exec.Cmd, logPath string, detach bool) (*Process, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() { _ = out.Close() }()
	_, _ = fmt.Fprintf(out, "---- start %s at %s: %s\n", name, time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// setsid makes a new process group too; setpgid after it would fail.
	cmd.SysProcAttr.Setsid = detach
	cmd.SysProcAttr.Setpgid = !detach
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Alive reports whether the process has not exited.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited returns a channel closed when the process exits, and its error after.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Err is the process's exit error once Exited is closed.
func (p *Process) Err() error { return p.err }

// Signal sends sig to the process (by pid).
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return errors.New(p.Name + " is not running")
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL (after SIGCONT, so a stopped process dies too) and waits.
func (p *Process) Kill() {
	if p.Alive() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// ErrKilled says a process ignored its stop signal and was killed.
var ErrKilled = errors.New("killed")

// Stop sends sig (after SIGCONT) and waits up to d for the exit, then kills. It
// returns the exit error (nil on a clean exit), or ErrKilled wrapped when it had
// to kill.
func (p *Process) Stop(sig syscall.Signal, d time.Duration) error {
	if !p.Alive() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.Kill()
		return fmt.Errorf("%s ignored %s for %v: %w", p.Name, SignalName(sig), d, ErrKilled)
	}
}

// SignalName is a stop signal's name, SIGTERM say.
func SignalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return "signal " + strconv.Itoa(int(sig))
}

// Term is Stop with SIGTERM.
func (p *Process) Term(d time.Duration) error { return p.Stop(syscall.SIGTERM, d) }

// pidRunning reports whether pid runs (a zombie does not) and its command line
// contains pattern.
func pidRunning(pid int, pattern string) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name's closing parenthesis.
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), pattern)
}

// readPid reads the first line of a pid file (0 when there is none).
func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// stopPid sends sig to pid, waits up to grace for it to end, then kills it. It
// waits on a process that is not its child by polling.
func stopPid(ctx context.Context, pid int, pattern string, sig syscall.Signal, grace time.Duration) (killed bool) {
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, sig)
	if waitGone(ctx, pid, pattern, grace) {
		return false
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitGone(context.WithoutCancel(ctx), pid, pattern, 10*time.Second)
	return true
}

// waitGone polls until pid no longer runs (true), or d passes or ctx ends (false).
func waitGone(ctx context.Context, pid int, pattern string, d time.Duration) bool {
	deadline := time.After(d)
	for pidRunning(pid, pattern) {
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}
