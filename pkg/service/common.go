package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// Defaults shared by the commands.
const (
	BrokersDefault     = "127.0.0.1:19092"
	DatabaseURLDefault = "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable"
)

// common holds the settings every command takes: where the log and the read model are.
type common struct {
	svc         *service
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

// common returns the common settings, their defaults from the service's config.
func (s *service) common() *common { return &common{svc: s} }

func (c *common) register(f *cli.Flags) {
	f.String(&c.brokers, "brokers", "KAFKA_BROKERS", BrokersDefault, "Kafka brokers, comma-separated host:port")
	f.String(&c.topic, "topic", "PROJECTOR_TOPIC", c.svc.Topic, "the event topic")
	f.String(&c.databaseURL, "database-url", "DATABASE_URL", DatabaseURLDefault, "PostgreSQL URL of the read model")
	f.String(&c.projection, "projection", "PROJECTOR_PROJECTION", c.svc.Projection, "projection name; its tables live in schema NAME_vVERSION")
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
	p, err := c.svc.NewProjection(c.projection, c.version)
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
	// A connection idle for a second is pinged before use; one a network cut left
	// half open would hold its ping, and the pool's Close at stop, for a minute.
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = pingTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("--database-url (DATABASE_URL): %w", err)
	}
	return pool, p, nil
}

// pingTimeout bounds the liveness ping of a pooled connection.
const pingTimeout = 5 * time.Second

const readyLagUsage = "per partition: a partition is live when its lag (log end minus stored position) is at most this; ready when every partition is live (0: only at the log end)"

func checkReadyLag(n int) error {
	if n < 0 {
		return fmt.Errorf("--ready-lag (PROJECTOR_READY_LAG) %d: must not be negative", n)
	}
	return nil
}

// readyLagSetting maps --ready-lag to projector's setting, where zero means the
// default and ReadyLagZero means 0.
func readyLagSetting(n int) int64 {
	if n == 0 {
		return projector.ReadyLagZero
	}
	return int64(n)
}

func effectNames(s string) []string {
	names := cli.SplitList(s)
	if len(names) == 1 && names[0] == "none" {
		return nil
	}
	return names
}

func snapshotDirDefault() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "projector", "snapshots")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "snapshots"
	}
	return filepath.Join(home, ".local", "share", "projector", "snapshots")
}
