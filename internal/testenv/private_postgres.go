package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PrivatePostgres is a PostgreSQL server of one test's own, for faults that would
// disturb other tests on the shared server: stopping it, restarting it.
type PrivatePostgres struct {
	URL  string
	bin  string
	dir  string
	port int
	tb   testing.TB
}

// NewPrivatePostgres initialises and starts a PostgreSQL server in a temporary folder,
// with the binaries the stack script uses, as the unprivileged user it uses when run
// as root (PG_USER_OS, default projector-pg). It is stopped when the test ends.
func NewPrivatePostgres(tb testing.TB) *PrivatePostgres {
	tb.Helper()
	Get(tb) // the same skip/fail rule as the rest of the stack
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		tb.Fatal("no PostgreSQL binaries under /usr/lib/postgresql: run scripts/stack.sh up")
	}
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "projector-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	pg := &PrivatePostgres{bin: bin, dir: dir, port: freePort(tb), tb: tb}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(pgUser())
		if err != nil {
			tb.Fatalf("user %s (made by scripts/stack.sh up): %v", pgUser(), err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	pg.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
	tb.Cleanup(func() {
		_ = pg.pgctl("stop", "-m", "immediate")
		_ = os.RemoveAll(dir)
	})
	pg.Start()
	pg.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
	return pg
}

func pgUser() string {
	if u := os.Getenv("PG_USER_OS"); u != "" {
		return u
	}
	return "projector-pg"
}

// Start starts the server and waits until it accepts connections.
func (pg *PrivatePostgres) Start() {
	pg.tb.Helper()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", pg.port, pg.dir)
	if err := pg.pgctl("start", "-w", "-t", "60", "-l", filepath.Join(pg.dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(pg.dir, "log"))
		pg.tb.Fatalf("start private PostgreSQL: %v\n%s", err, log)
	}
}

// Stop stops the server: mode "fast" (clients are told it shuts down) or
// "immediate" (as a crash).
func (pg *PrivatePostgres) Stop(mode string) {
	pg.tb.Helper()
	if err := pg.pgctl("stop", "-w", "-m", mode); err != nil {
		pg.tb.Fatalf("stop private PostgreSQL: %v", err)
	}
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

func (pg *PrivatePostgres) pgctl(args ...string) error {
	return pg.command("pg_ctl", append([]string{"-D", filepath.Join(pg.dir, "data")}, args...)...).Run()
}

func (pg *PrivatePostgres) run(name string, args ...string) {
	pg.tb.Helper()
	if out, err := pg.command(name, args...).CombinedOutput(); err != nil {
		pg.tb.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (pg *PrivatePostgres) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(pg.bin, name)
	if os.Geteuid() == 0 {
		return exec.CommandContext(context.Background(), "runuser", append([]string{"-u", pgUser(), "--", path}, args...)...)
	}
	return exec.CommandContext(context.Background(), path, args...)
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
