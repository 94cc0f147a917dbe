package servers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// PGUserDefault is the OS user PostgreSQL runs as when the caller is root
// (PostgreSQL refuses to run as root); scripts/stack.sh makes it.
const PGUserDefault = "projector-pg"

// Postgres is a PostgreSQL server of Debian's packages (the newest under
// /usr/lib/postgresql), one cluster with trust authentication for user postgres.
type Postgres struct {
	// Host is the address it listens on. Default: HostDefault. On another
	// address than loopback, pg_hba.conf trusts that address's /8 too.
	Host string
	// Port is its port. Required.
	Port int
	// Dir holds the cluster (data/), its socket and initdb.log. Required.
	Dir string
	// OSUser is who runs it when the caller is root. Default: $PG_USER_OS, else
	// PGUserDefault.
	OSUser string
	// Lifetime picks durability: a Shared server syncs to disk and takes 200
	// connections; a Private one does neither and keeps its WAL small.
	Lifetime Lifetime
}

func (pg Postgres) withDefaults() Postgres {
	if pg.Host == "" {
		pg.Host = HostDefault
	}
	if pg.OSUser == "" {
		pg.OSUser = os.Getenv("PG_USER_OS")
	}
	if pg.OSUser == "" {
		pg.OSUser = PGUserDefault
	}
	return pg
}

func (pg Postgres) validate() error {
	return required("postgres", field{"Port", pg.Port == 0}, field{"Dir", pg.Dir == ""})
}

// Name is "postgres".
func (Postgres) Name() string { return "postgres" }

// Pattern is the server's binary name.
func (Postgres) Pattern() string { return "postgres" }

// StopSignal is SIGINT, PostgreSQL's fast shutdown: clients are told, then it stops.
func (Postgres) StopSignal() syscall.Signal { return syscall.SIGINT }

// PGStopSignal is the signal of a pg_ctl shutdown mode: smart, fast or immediate
// (as a crash).
func PGStopSignal(mode string) (syscall.Signal, error) {
	switch mode {
	case "smart":
		return syscall.SIGTERM, nil
	case "fast":
		return syscall.SIGINT, nil
	case "immediate":
		return syscall.SIGQUIT, nil
	}
	return 0, fmt.Errorf("postgres: stop mode %q: want smart, fast or immediate", mode)
}

// DataDir is the cluster's folder.
func (pg Postgres) DataDir() string { return filepath.Join(pg.Dir, "data") }

// URL is the connection URL of database postgres.
func (pg Postgres) URL() string {
	pg = pg.withDefaults()
	return "postgres://postgres@" + hostPort(pg.Host, pg.Port) + "/postgres?sslmode=disable"
}

// InitdbArgs are initdb's arguments.
func (pg Postgres) InitdbArgs() []string {
	args := []string{"-D", pg.DataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"}
	if pg.Lifetime == Private {
		args = append(args, "--no-sync")
	}
	return args
}

// Settings are the server's settings, given on its command line.
func (pg Postgres) Settings() []Setting {
	pg = pg.withDefaults()
	s := []Setting{
		{"listen_addresses", pg.Host},
		{"port", strconv.Itoa(pg.Port)},
		{"unix_socket_directories", pg.Dir},
		{"shared_buffers", "128MB"},
	}
	if pg.Lifetime == Shared {
		return append(s, Setting{"max_connections", "200"}, Setting{"fsync", "on"})
	}
	// A throw-away cluster: nothing to sync, and a WAL that fits the chaos
	// suite's 384 MiB tmpfs beside the data.
	return append(s, Setting{"max_connections", "100"}, Setting{"fsync", "off"},
		Setting{"max_wal_size", "96MB"}, Setting{"min_wal_size", "32MB"})
}

// HBA is what Prepare adds to initdb's pg_hba.conf (which trusts loopback only).
func (pg Postgres) HBA() string {
	pg = pg.withDefaults()
	if isLoopback(pg.Host) {
		return ""
	}
	// The chaos suite's network namespace connects from the veth's other end.
	return "host all all " + pg.Host + "/8 trust\n"
}

// bin finds the newest PostgreSQL's binaries.
func (Postgres) bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("postgres: no PostgreSQL binaries under /usr/lib/postgresql: %s", installHint)
}

func isExec(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&0o111 != 0
}

// Check finds the binaries and, as root, the OS user.
func (pg Postgres) Check() error {
	pg = pg.withDefaults()
	if _, err := pg.bin(); err != nil {
		return err
	}
	_, err := pg.credential()
	return err
}

// credential is who the server runs as: nil unless the caller is root.
func (pg Postgres) credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(pg.OSUser)
	if err != nil {
		return nil, fmt.Errorf("postgres: OS user %s: %w (%s)", pg.OSUser, err, installHint)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("postgres: OS user %s: %w", pg.OSUser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// command runs a PostgreSQL binary as the OS user.
func (pg Postgres) command(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	bin, err := pg.bin()
	if err != nil {
		return nil, err
	}
	cred, err := pg.credential()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
	cmd.Dir = pg.Dir // a working folder the OS user may enter
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	return cmd, nil
}

// Prepare makes Dir (owned by the OS user) and runs initdb when it holds no
// cluster yet.
func (pg Postgres) Prepare(ctx context.Context) error {
	pg = pg.withDefaults()
	if err := pg.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(pg.Dir, 0o755); err != nil {
		return err
	}
	cred, err := pg.credential()
	if err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(pg.Dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(pg.DataDir(), "PG_VERSION")); err == nil {
		return nil
	}
	cmd, err := pg.command(ctx, "initdb", pg.InitdbArgs()...)
	if err != nil {
		return err
	}
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(pg.Dir, "initdb.log"), out, 0o644)
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	if hba := pg.HBA(); hba != "" {
		f, err := os.OpenFile(filepath.Join(pg.DataDir(), "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString(hba)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return nil
}

// Command is the postmaster in the foreground, as the OS user: its pid is the
// server's, so that signals reach it (SIGINT fast, SIGQUIT immediate).
func (pg Postgres) Command(ctx context.Context) (*exec.Cmd, error) {
	pg = pg.withDefaults()
	if err := pg.validate(); err != nil {
		return nil, err
	}
	args := []string{"-D", pg.DataDir()}
	for _, s := range pg.Settings() {
		args = append(args, "-c", s.Key+"="+s.Value)
	}
	return pg.command(ctx, "postgres", args...)
}

// Ready connects and runs a query.
func (pg Postgres) Ready(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	return conn.Ping(ctx)
}
