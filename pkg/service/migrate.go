package service

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/store"
)

const migrateUsage = `{{.Name}} migrate up|status: the framework schema's numbered migrations.

The framework's tables (offsets, sequence marks, parked events, effect starts,
migrations, active versions) live in one schema (--schema, default projector) and
change only through numbered migrations. Every command that writes applies the
pending ones by itself, under an advisory lock; 'migrate up' does it ahead of a
deployment, and 'migrate status' shows where a database stands. A database with a
migration this build does not know is refused: an older build against a newer schema.

  {{.Name}} migrate up
  {{.Name}} migrate status [--json]
`

func (s *service) runMigrate(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := s.common()
	var asJSON bool
	define := func(sub string, f *cli.Flags) {
		c.register(f)
		if sub == "status" {
			f.Bool(&asJSON, "json", "", false, "print JSON")
		}
	}
	sub, f, err := cli.ParseSubcommand("migrate", s.text(migrateUsage), args, stdout, define, "up", "status")
	if sub == "" {
		return err
	}
	if len(f.Args()) != 0 {
		return fmt.Errorf("migrate %s takes no arguments, got %q", sub, f.Args())
	}
	pool, _, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if sub == "up" {
		ran, err := store.Up(ctx, pool, c.schema)
		if err != nil {
			return err
		}
		if len(ran) == 0 {
			_, _ = fmt.Fprintf(stdout, "schema %s is up to date\n", c.schema)
			return nil
		}
		_, _ = fmt.Fprintf(stdout, "schema %s: applied migrations %v\n", c.schema, ran)
		return nil
	}
	states, err := store.Status(ctx, pool, c.schema)
	if err != nil {
		return err
	}
	type row struct {
		Version   int        `json:"version"`
		Name      string     `json:"name"`
		AppliedAt *time.Time `json:"applied_at"`
		Unknown   bool       `json:"unknown_to_this_build,omitempty"`
	}
	rows := make([]row, len(states))
	for i, s := range states {
		rows[i] = row{Version: s.Version, Name: s.Name, AppliedAt: s.AppliedAt, Unknown: s.Unknown}
	}
	return cli.WriteList(stdout, asJSON, rows, "VERSION\tNAME\tAPPLIED", func(r row) string {
		at := "pending"
		if r.AppliedAt != nil {
			at = r.AppliedAt.UTC().Format(time.RFC3339)
		}
		if r.Unknown {
			at += " (unknown to this build: a newer one applied it)"
		}
		return fmt.Sprintf("%04d\t%s\t%s", r.Version, r.Name, at)
	})
}
