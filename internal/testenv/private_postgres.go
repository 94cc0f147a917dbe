package testenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/servers"
)

// PrivatePostgres is a PostgreSQL server of one test's own, for faults that would
// disturb other tests on the shared server: stopping it, restarting it.
type PrivatePostgres struct {
	URL  string
	srv  servers.Postgres
	proc *servers.Process
	tb   testing.TB
}

// NewPrivatePostgres initialises and starts a PostgreSQL server in a temporary
// folder: internal/servers' description, Lifetime Private, with the binaries the
// stack script installs, as the unprivileged user it uses when run as root
// (PG_USER_OS, default projector-pg). It is stopped when the test ends.
func NewPrivatePostgres(tb testing.TB) *PrivatePostgres {
	tb.Helper()
	Get(tb) // the same skip/fail rule as the rest of the stack
	// Not tb.TempDir: PostgreSQL's OS user must reach the folder.
	dir, err := os.MkdirTemp("", "projector-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	pg := &PrivatePostgres{srv: servers.Postgres{Port: freePort(tb), Dir: dir}, tb: tb}
	tb.Cleanup(func() {
		if pg.proc != nil {
			_ = pg.proc.Stop(syscall.SIGQUIT, time.Minute) // immediate: nothing to keep
		}
		_ = os.RemoveAll(dir)
	})
	if err := pg.srv.Check(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pg.srv.Prepare(ctx); err != nil {
		tb.Fatal(err)
	}
	pg.Start()
	pg.URL = pg.srv.URL()
	return pg
}

// Start starts the server and waits until it accepts connections.
func (pg *PrivatePostgres) Start() {
	pg.tb.Helper()
	pg.proc = startPrivate(pg.tb, pg.srv, filepath.Join(pg.srv.Dir, "log"), time.Minute)
}

// Stop stops the server: mode "fast" (clients are told it shuts down) or
// "immediate" (as a crash).
func (pg *PrivatePostgres) Stop(mode string) {
	pg.tb.Helper()
	sig, err := servers.PGStopSignal(mode)
	if err != nil {
		pg.tb.Fatal(err)
	}
	if pg.proc == nil {
		pg.tb.Fatal("stop private PostgreSQL: not running")
	}
	if err := pg.proc.Stop(sig, time.Minute); errors.Is(err, servers.ErrKilled) {
		pg.tb.Fatalf("stop private PostgreSQL: %v", err)
	}
	pg.proc = nil
}

// Pool returns a pool on the private server, closed when the test ends.
func (pg *PrivatePostgres) Pool() *pgxpool.Pool {
	pg.tb.Helper()
	pool, err := pgxpool.New(context.Background(), pg.URL)
	if err != nil {
		pg.tb.Fatal(err)
	}
	pg.tb.Cleanup(pool.Close)
	return pool
}

func freePort(tb testing.TB) int {
	tb.Helper()
	port, err := servers.FreePort(context.Background(), "127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	return port
}
