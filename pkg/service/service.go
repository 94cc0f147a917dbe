package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

// Config is a service: its read model, its effects and its own HTTP routes. The
// zero value of every optional field means its default.
type Config struct {
	// Name is the command's name in usage and messages (default: the executable's
	// base name).
	Name string
	// About says in a few words what the read model holds; usage and 'run --help'
	// show it.
	About string
	// Topic is the default of --topic (PROJECTOR_TOPIC): the event topic. Required.
	Topic string
	// Projection is the default of --projection (PROJECTOR_PROJECTION): the
	// projection's name; its tables live in schema NAME_vVERSION. Required.
	Projection string
	// NewProjection builds the read model for the --projection and --version given.
	// Required.
	NewProjection func(name string, version int) (*readmodel.Projection, error)
	// Effects are the effects the service can run; --effects picks among them
	// (default: all of them).
	Effects []Effect
	// Routes mounts the service's own HTTP routes beside the status page, /metrics,
	// /healthz, /readyz and /status (nil: none). It is called once, when run starts
	// serving its API; a pattern that clashes with those panics then, as ServeMux does.
	Routes func(mux *http.ServeMux, rm ReadModel)
	// RoutesHelp lists Routes for 'run --help', a line each, e.g.
	// "GET /v1/orders/{id}   one order".
	RoutesHelp []string
	// MailFrom is the default of --mail-from (default MailFromDefault).
	MailFrom string
}

// Effect is an effect the service can run, built once its settings are known.
type Effect struct {
	// Name is the effect's name: the one New gives sideeffects.Define.
	Name string
	// Help says what it does, for 'run --help'.
	Help string
	// New builds the effect on the projection's registry.
	New func(reg *events.Registry, d Deps) (*sideeffects.Effect, error)
}

// Deps is what the service hands an effect's New, built from its settings.
type Deps struct {
	// Mailer sends over --smtp-addr (SMTP_ADDR) from --mail-from (PROJECTOR_MAIL_FROM).
	Mailer sideeffects.Mailer
}

// ReadModel is what a service's own routes read: the read model's pool and the
// projection, whose tables are in Schema().
type ReadModel struct {
	Pool       *pgxpool.Pool
	Projection *readmodel.Projection
}

// Schema is the projection's versioned schema, quoted for SQL: Schema()+".orders".
func (m ReadModel) Schema() string { return pgx.Identifier{m.Projection.Schema()}.Sanitize() }

// Main runs the service's command line on os.Args under SIGINT and SIGTERM, and
// exits: 0 on success, 1 on failure, 2 on bad usage, or the status a command asks
// for (status: 3 while not ready).
func Main(cfg Config) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, cfg, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(cfg.commandName(), err, os.Stderr))
}

// exitStatus is the process's exit status for err, which it prints when it says
// more than the status.
func exitStatus(name string, err error, stderr io.Writer) int {
	var code ExitCode
	var bad *usageError
	switch {
	case err == nil, errors.Is(err, cli.ErrHelp):
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &bad):
		_, _ = fmt.Fprintln(stderr, name+":", err)
		return 2
	default:
		_, _ = fmt.Fprintln(stderr, name+":", err)
		return 1
	}
}

// Run runs one command of the service's command line: args is what follows the
// executable's name. It returns an ExitCode for an exit status other than 0 or 1.
func Run(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	s, err := newService(cfg)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		// No command is bad usage: the usage goes to standard error, exit status 2.
		_, _ = fmt.Fprint(stderr, s.usage())
		return ExitCode(2)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, _ = fmt.Fprint(stdout, s.usage())
		return nil
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"run": s.runRun, "status": s.runStatus, "dlq": s.runDLQ, "snapshot": s.runSnapshot, "versions": s.runVersions,
		"replay": s.runReplay, "migrate": s.runMigrate,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return &usageError{fmt.Errorf("unknown command %q (see %s --help)", args[0], s.name)}
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// service is a Config, checked, with its defaults.
type service struct {
	Config
	name string
}

func newService(cfg Config) (*service, error) {
	s := &service{Config: cfg, name: cfg.commandName()}
	if s.MailFrom == "" {
		s.MailFrom = MailFromDefault
	}
	switch {
	case cfg.Topic == "":
		return nil, errors.New("service: Config.Topic is empty")
	case cfg.Projection == "":
		return nil, errors.New("service: Config.Projection is empty")
	case cfg.NewProjection == nil:
		return nil, errors.New("service: Config.NewProjection is nil")
	}
	for i, e := range cfg.Effects {
		if e.Name == "" || e.New == nil || e.Name == "none" {
			return nil, fmt.Errorf("service: Config.Effects[%d] (%q): needs a Name other than none, and New", i, e.Name)
		}
	}
	return s, nil
}

func (c Config) commandName() string {
	if c.Name != "" {
		return c.Name
	}
	return filepath.Base(os.Args[0])
}

// effectNames is the default of --effects: every effect, or none.
func (s *service) effectNames() string {
	var names []string
	for _, e := range s.Effects {
		names = append(names, e.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

const usageTemplate = `{{.Name}} builds a read model in PostgreSQL from the event log and serves it.{{.About}}

Usage: {{.Name}} COMMAND [flags]

Commands:
  run        consume the log into the read model (from offset zero, then live) and serve HTTP
  status     per-partition position, lag, events/s, ETA and parked events (text or --json)
  dlq        list parked events and effects, retry them after a fix, or skip them
  snapshot   create, list, show, restore, prune and scrub snapshots of the read model
  versions   blue/green: list versions, activate one (stable views switch), drop one
  replay     rebuild the read model as of a time or offsets into another schema
  migrate    apply the framework schema's numbered migrations, or show where a database stands

Events with personal data (events.WithPersonalData) are encrypted per subject: run,
replay, snapshot restore and scrub then need the master key (--master-key,
PROJECTOR_MASTER_KEY); a forgotten subject's fields read as "[forgotten]".

'{{.Name}} COMMAND --help' lists a command's flags, each with its default and its
environment variable.

Exit status: 0 on success, 1 on failure, 2 on bad usage (no command, or an
unknown one), 3 from status while the projection is not ready or has never run.
`

func (s *service) usage() string {
	about := ""
	if s.About != "" {
		about = "\nThe read model: " + s.About + "."
	}
	return strings.NewReplacer("{{.Name}}", s.name, "{{.About}}", about).Replace(usageTemplate)
}

// usageError is bad usage: exit status 2.
type usageError struct{ error }

func (e *usageError) Unwrap() error { return e.error }

// ExitCode is an error that only sets the process's exit status.
type ExitCode int

func (e ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// text fills a help text in with the service's name.
func (s *service) text(t string) string { return strings.ReplaceAll(t, "{{.Name}}", s.name) }
