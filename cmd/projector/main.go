// Command projector runs a projection service: it builds the example domain's
// PostgreSQL read model from the event log, from offset zero, keeps it current, and
// serves it; and it reports status and manages parked events.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

const usage = `projector builds a read model in PostgreSQL from the event log and serves it.

Usage: projector COMMAND [flags]

Commands:
  run        consume the log into the read model (from offset zero, then live) and serve HTTP
  status     per-partition position, lag, events/s, ETA and parked events (text or --json)
  dlq        list parked events and effects, retry them after a fix, or skip them
  snapshot   create, list, show, restore, prune and scrub snapshots of the read model
  versions   blue/green: list versions, activate one (stable views switch), drop one
  replay     rebuild the read model as of a time or offsets into another schema
  migrate    apply the framework schema's numbered migrations, or show where a database stands

The example's events carry personal data (a user's email and name), encrypted per
user: run, replay, snapshot restore and scrub need the master key (--master-key,
PROJECTOR_MASTER_KEY); a forgotten user's fields read as "[forgotten]".

'projector COMMAND --help' lists a command's flags, each with its default and its
environment variable.

Exit status: 0 on success, 1 on failure, 2 on bad usage (no command, or an
unknown one), 3 from status while the projection is not ready or has never run.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var code exitCode
	var bad *usageError
	switch {
	case err == nil, errors.Is(err, cli.ErrHelp):
	case errors.As(err, &code):
		os.Exit(int(code))
	case errors.As(err, &bad):
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "projector:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		// No command is bad usage: the usage goes to standard error, exit status 2.
		_, _ = fmt.Fprint(stderr, usage)
		return exitCode(2)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = fmt.Fprint(stdout, usage)
		return nil
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"run": runRun, "status": runStatus, "dlq": runDLQ, "snapshot": runSnapshot, "versions": runVersions, "replay": runReplay,
		"migrate": runMigrate,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return &usageError{fmt.Errorf("unknown command %q (see projector --help)", args[0])}
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// usageError is bad usage: exit status 2.
type usageError struct{ error }

func (e *usageError) Unwrap() error { return e.error }

// Defaults shared by the commands.
const (
	BrokersDefault     = "127.0.0.1:19092"
	TopicDefault       = "users"
	DatabaseURLDefault = "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable"
)

// common holds the settings every command takes: where the log and the read model are.
type common struct {
	brokers     string
	topic       string
	databaseURL string
	projection  string
	version     int
	schema      string
	logLevel    string
	masterKey   string
	keySchema   string
	keyDB       string

	// reach connects to a database at start: run waits for it (startup.reach); nil
	// means one attempt, whose failure is the error.
	reach func(ctx context.Context, what string, ping func(context.Context) error) error
}

// reachDB makes sure the database answers, naming it in the error.
func (c *common) reachDB(ctx context.Context, what string, ping func(context.Context) error) error {
	if c.reach != nil {
		return c.reach(ctx, what, ping)
	}
	if err := ping(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// databaseName names the read model's database in messages: where it is, and the setting.
func (c *common) databaseName() string {
	return "database " + cli.DatabaseAddr(c.databaseURL) + " (--database-url, DATABASE_URL)"
}

// keyDatabaseName names the key store's database in messages.
func (c *common) keyDatabaseName() string {
	if c.keyDB == "" {
		return c.databaseName()
	}
	return "database " + cli.DatabaseAddr(c.keyDB) + " (--key-database-url, PROJECTOR_KEY_DATABASE_URL)"
}

func (c *common) register(f *cli.Flags) {
	f.String(&c.brokers, "brokers", "KAFKA_BROKERS", BrokersDefault, "Kafka brokers, comma-separated host:port")
	f.String(&c.topic, "topic", "PROJECTOR_TOPIC", TopicDefault, "the event topic")
	f.String(&c.databaseURL, "database-url", "DATABASE_URL", DatabaseURLDefault, "PostgreSQL URL of the read model")
	f.String(&c.projection, "projection", "PROJECTOR_PROJECTION", domain.ProjectionName, "projection name; its tables live in schema NAME_vVERSION")
	f.Int(&c.version, "version", "PROJECTOR_VERSION", 1, "projection version: a new version builds beside the old")
	f.String(&c.schema, "schema", "PROJECTOR_SCHEMA", readmodel.FrameworkSchemaDefault, "schema of the framework's tables (offsets, parked events)")
	f.String(&c.logLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	f.String(&c.masterKey, "master-key", shred.MasterKeyEnv, "", "master key of the personal-data key store (32 bytes, base64 or hex): decrypts personal fields")
	f.String(&c.keySchema, "key-schema", "PROJECTOR_KEY_SCHEMA", shred.SchemaDefault, "schema of the personal-data key store")
	f.String(&c.keyDB, "key-database-url", "PROJECTOR_KEY_DATABASE_URL", "", "PostgreSQL of the key store, shared by every service reading the log (default: --database-url)")
}

// keys opens the personal-data key store. A projection whose events carry personal
// data needs it, and a wrong master key is refused here, at start.
func (c *common) keys(ctx context.Context, pool *pgxpool.Pool, p *readmodel.Projection) (shred.KeyStore, error) {
	master, err := c.master(p)
	if err != nil || master == nil {
		return nil, err
	}
	if c.keyDB != "" {
		// The key store is shared infrastructure, like the log: a service with a
		// database of its own still reads the producer's keys. The pool lives as long
		// as the process.
		if pool, err = pgxpool.New(ctx, c.keyDB); err != nil {
			return nil, fmt.Errorf("--key-database-url (PROJECTOR_KEY_DATABASE_URL): %w", err)
		}
		if err := c.reachDB(ctx, "the key store's "+c.keyDatabaseName(), pool.Ping); err != nil {
			pool.Close()
			return nil, err
		}
	}
	keys, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{Schema: c.keySchema})
	if err != nil {
		if c.keyDB != "" {
			pool.Close()
		}
		return nil, fmt.Errorf("key store (schema %s in %s): %w", c.keySchema, c.keyDatabaseName(), err)
	}
	return keys, nil
}

// master checks the master key without a database: nil when none is set and the
// projection needs none.
func (c *common) master(p *readmodel.Projection) ([]byte, error) {
	if c.masterKey == "" {
		if p.Registry().HasPersonalData() {
			return nil, fmt.Errorf("the projection's events carry personal data, encrypted per subject: %w", shred.ErrNoMasterKey)
		}
		return nil, nil
	}
	master, err := shred.ParseMasterKey(c.masterKey)
	if err != nil {
		return nil, fmt.Errorf("--master-key (%s): %w", shred.MasterKeyEnv, err)
	}
	return master, nil
}

// forgotten reads the key store's record of forgotten subjects, without the master
// key: reports need who was forgotten when, never a key. done releases what it opened.
func (c *common) forgotten(ctx context.Context, pool *pgxpool.Pool) (_ forget.Forgettings, done func(), err error) {
	if c.keyDB == "" {
		return shred.PGForgotten{Pool: pool, Schema: c.keySchema}, func() {}, nil
	}
	kp, err := pgxpool.New(ctx, c.keyDB)
	if err != nil {
		return nil, nil, fmt.Errorf("--key-database-url (PROJECTOR_KEY_DATABASE_URL): %w", err)
	}
	return shred.PGForgotten{Pool: kp, Schema: c.keySchema}, kp.Close, nil
}

// open validates the common settings and connects to PostgreSQL: a database that
// does not answer is an error that names it (run waits for it instead).
func (c *common) open(ctx context.Context) (*pgxpool.Pool, *readmodel.Projection, error) {
	pool, p, err := c.openPool(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := c.reachDB(ctx, c.databaseName(), pool.Ping); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return pool, p, nil
}

// openPool validates the common settings and makes the read model's pool, which
// connects on first use.
func (c *common) openPool(ctx context.Context) (*pgxpool.Pool, *readmodel.Projection, error) {
	if len(cli.SplitList(c.brokers)) == 0 {
		return nil, nil, errors.New("--brokers (KAFKA_BROKERS) is empty")
	}
	if c.topic == "" {
		return nil, nil, errors.New("--topic (PROJECTOR_TOPIC) is empty")
	}
	p, err := domain.NewProjection(c.projection, c.version)
	if err != nil {
		return nil, nil, fmt.Errorf("--projection/--version: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(c.databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--database-url (DATABASE_URL): %w", err)
	}
	if cfg.MaxConns < 16 {
		cfg.MaxConns = 16
	}
	// A paused or partitioned instance must not hold its batch transaction (and the
	// offset row's lock) forever: PostgreSQL ends such a session, rolling it back.
	if _, set := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "15s"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("--database-url (DATABASE_URL): %w", err)
	}
	return pool, p, nil
}

func parsePolicies(gaps, unknown string) (projector.GapPolicy, projector.UnknownPolicy, error) {
	var g projector.GapPolicy
	var u projector.UnknownPolicy
	switch gaps {
	case "warn":
		g = projector.GapWarn
	case "halt":
		g = projector.GapHalt
	default:
		return 0, 0, fmt.Errorf("--gaps (PROJECTOR_GAPS) %q: want warn or halt", gaps)
	}
	switch unknown {
	case "skip":
		u = projector.UnknownSkip
	case "park":
		u = projector.UnknownPark
	default:
		return 0, 0, fmt.Errorf("--unknown-types (PROJECTOR_UNKNOWN_TYPES) %q: want skip or park", unknown)
	}
	return g, u, nil
}

func positive(name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s %v: must be positive", name, d)
	}
	return nil
}

// subcommand picks a command's subcommand from args: with none, or -h/--help, it
// prints usage with every subcommand's flags (define defines SUB's flags) and
// returns "" (with an error when none was given); an unknown one is an error naming
// the choices.
func subcommand(cmd, usage string, args []string, stdout io.Writer, define func(sub string, f *cli.Flags), valid ...string) (string, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		cli.PrintSubcommandHelp(stdout, cmd, usage, valid, define)
		if len(args) == 0 {
			return "", fmt.Errorf("%s takes a subcommand: %s", cmd, strings.Join(valid, ", "))
		}
		return "", nil
	}
	if !slices.Contains(valid, args[0]) {
		return "", fmt.Errorf("%s %s: want %s", cmd, args[0], strings.Join(valid, ", "))
	}
	return args[0], nil
}
