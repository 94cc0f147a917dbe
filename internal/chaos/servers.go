package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/projector/projector/internal/servers"
)

// The suite's servers are internal/servers' descriptions with Lifetime Private
// (the zero value), on the scenario's host — loopback, or a veth address — and
// supervised by the scenario, so they can be killed, frozen and restarted.

// start runs srv under sup as name and waits until it answers. The process is
// returned even when it does not answer, so the caller can kill it.
func start(ctx context.Context, sup *Supervisor, name string, srv servers.Server, timeout time.Duration) (*Proc, error) {
	cmd, err := srv.Command(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	p, err := sup.Start(name, cmd)
	if err != nil {
		return nil, err
	}
	return p, servers.WaitReady(ctx, srv, p, timeout)
}

// prepare checks that srv is installed and writes its configuration.
func prepare(ctx context.Context, srv servers.Server) error {
	if err := srv.Check(); err != nil {
		return err
	}
	return srv.Prepare(ctx)
}

// Kafka is a private single-node KRaft broker (combined mode, static voter) the
// suite starts, kills and restarts on the same log folder.
type Kafka struct {
	Host string
	Port int
	srv  servers.Kafka
	sup  *Supervisor
	proc *Proc
	name string
}

// StartKafka formats a log folder under dir and starts a broker on host.
func StartKafka(ctx context.Context, sup *Supervisor, name, host, dir string) (*Kafka, error) {
	ports, err := servers.FreePorts(ctx, host, 2)
	if err != nil {
		return nil, err
	}
	port, ctrl := ports[0], ports[1]
	k := &Kafka{Host: host, Port: port, sup: sup, name: name,
		srv: servers.Kafka{Host: host, Port: port, ControllerPort: ctrl, Dir: dir}}
	if err := prepare(ctx, k.srv); err != nil {
		return nil, err
	}
	return k, k.Start(ctx)
}

// Brokers is the bootstrap list.
func (k *Kafka) Brokers() []string { return k.srv.Brokers() }

// Start starts the broker on its log folder and waits until it serves metadata.
func (k *Kafka) Start(ctx context.Context) error {
	p, err := start(ctx, k.sup, k.name, k.srv, 2*time.Minute)
	if p != nil {
		k.proc = p
	}
	if err != nil {
		return fmt.Errorf("kafka %s: %w", k.name, err)
	}
	return nil
}

// Kill ends the broker with SIGKILL, by pid.
func (k *Kafka) Kill() {
	if k.proc != nil {
		k.proc.Kill()
	}
}

// Proc is the running broker process.
func (k *Kafka) Proc() *Proc { return k.proc }

// Postgres is a private PostgreSQL server run as the stack's unprivileged OS user.
type Postgres struct {
	Host string
	Port int
	srv  servers.Postgres
	dir  string // holds data/ and the socket; a tmpfs mount point in scenario 5
	sup  *Supervisor
	proc *Proc
}

// StartPostgres runs initdb in dir/data and starts the server on host.
func StartPostgres(ctx context.Context, sup *Supervisor, host, dir string) (*Postgres, error) {
	port, err := FreePort(ctx, host)
	if err != nil {
		return nil, err
	}
	pg := &Postgres{Host: host, Port: port, dir: dir, sup: sup, srv: servers.Postgres{Host: host, Port: port, Dir: dir}}
	if err := prepare(ctx, pg.srv); err != nil {
		return nil, err
	}
	return pg, pg.Start(ctx)
}

// URL is the connection URL of database postgres.
func (pg *Postgres) URL() string { return pg.srv.URL() + "&connect_timeout=5" }

// Start starts the server and waits until it accepts connections.
func (pg *Postgres) Start(ctx context.Context) error {
	p, err := start(ctx, pg.sup, "postgres", pg.srv, time.Minute)
	if p != nil {
		pg.proc = p
	}
	if err != nil {
		return fmt.Errorf("start private PostgreSQL: %w", err)
	}
	return nil
}

// Stop stops the server: "fast" or "immediate" (as a crash). A server that has
// exited already is stopped.
func (pg *Postgres) Stop(_ context.Context, mode string) error {
	sig, err := servers.PGStopSignal(mode)
	if err != nil {
		return err
	}
	if pg.proc == nil {
		return errors.New("private PostgreSQL: never started")
	}
	if err := pg.proc.Stop(sig, time.Minute); errors.Is(err, servers.ErrKilled) {
		return fmt.Errorf("postgres stop -m %s: %w", mode, err)
	}
	return nil
}

// Log is the server's log file.
func (pg *Postgres) Log() string {
	if pg.proc == nil {
		return ""
	}
	return pg.proc.Log
}

// Exec runs statements on a fresh connection.
func (pg *Postgres) Exec(ctx context.Context, sql ...string) error {
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// Redis is a private redis-server without persistence: killed, it comes back empty.
type Redis struct {
	Host string
	Port int
	srv  servers.Redis
	sup  *Supervisor
	proc *Proc
}

// StartRedis starts redis-server on host.
func StartRedis(ctx context.Context, sup *Supervisor, host, dir string) (*Redis, error) {
	port, err := FreePort(ctx, host)
	if err != nil {
		return nil, err
	}
	r := &Redis{Host: host, Port: port, sup: sup, srv: servers.Redis{Host: host, Port: port, Dir: dir}}
	if err := prepare(ctx, r.srv); err != nil {
		return nil, err
	}
	return r, r.Start(ctx)
}

// Addr is host:port.
func (r *Redis) Addr() string { return r.srv.Addr() }

// URL is the redis URL.
func (r *Redis) URL() string { return r.srv.URL() }

// Start starts the server (again) and waits for PING.
func (r *Redis) Start(ctx context.Context) error {
	p, err := start(ctx, r.sup, "redis", r.srv, 30*time.Second)
	if p != nil {
		r.proc = p
	}
	return err
}

// Kill ends the server with SIGKILL, by pid.
func (r *Redis) Kill() {
	if r.proc != nil {
		r.proc.Kill()
	}
}

// Client returns a new client; the caller closes it.
func (r *Redis) Client() *redis.Client { return redis.NewClient(&redis.Options{Addr: r.Addr()}) }

// Mailpit is a private Mailpit: the effects' SMTP sink, with an HTTP API to count
// deliveries by Message-ID.
type Mailpit struct {
	Host     string
	SMTPPort int
	HTTPPort int
	srv      servers.Mailpit
}

// StartMailpit starts Mailpit on host.
func StartMailpit(ctx context.Context, sup *Supervisor, host, dir string) (*Mailpit, error) {
	ports, err := servers.FreePorts(ctx, host, 2)
	if err != nil {
		return nil, err
	}
	smtp, web := ports[0], ports[1]
	m := &Mailpit{Host: host, SMTPPort: smtp, HTTPPort: web, srv: servers.Mailpit{Host: host, SMTPPort: smtp, HTTPPort: web, Dir: dir}}
	if err := prepare(ctx, m.srv); err != nil {
		return nil, err
	}
	if _, err := start(ctx, sup, "mailpit", m.srv, 30*time.Second); err != nil {
		return nil, err
	}
	return m, nil
}

// SMTPAddr is host:port of its SMTP server.
func (m *Mailpit) SMTPAddr() string { return m.srv.SMTPAddr() }

// APIURL is the base URL of its HTTP API.
func (m *Mailpit) APIURL() string { return m.srv.APIURL() }
