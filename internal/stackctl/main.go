// Command stackctl starts, stops and reports the shared local stack that
// scripts/stack.sh runs, as internal/servers describes it. The script installs
// the binaries first, then runs it; it reads the script's settings from the
// environment (see servers.StackFromEnv).
//
//	stackctl up      start what does not run, wait until it answers, write the env file
//	stackctl down    stop exactly what the stack started, by pid
//	stackctl status  each server's pid, then the env file; exit 1 if one is stopped
//	stackctl logs    the end of each server's log ($LINES_TAIL lines, default 30)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/projector/projector/internal/servers"
)

// errStopped makes status exit 1 without a message of its own.
var errStopped = errors.New("stopped")

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	cancel()
	if errors.Is(err, errStopped) {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stack: error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: stackctl up|down|status|logs")
	}
	s, err := servers.StackFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	s.Logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, "stack: "+format+"\n", a...) }
	switch args[0] {
	case "up":
		// Ten minutes covers waiting for another up, then Kafka's first start.
		ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		return s.Up(ctx)
	case "down":
		return s.Down(ctx)
	case "status":
		if !s.Status(os.Stdout) {
			return errStopped
		}
		return nil
	case "logs":
		n, err := strconv.Atoi(os.Getenv("LINES_TAIL"))
		if err != nil || n <= 0 {
			n = 30
		}
		s.Logs(os.Stdout, n)
		return nil
	}
	return fmt.Errorf("unknown command %q: want up, down, status or logs", args[0])
}
