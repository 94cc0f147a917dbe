package service

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/admin"
)

const versionsUsage = `{{.Name}} versions list|activate|drop: blue/green read models.

Each version of a projection lives in its own schema (NAME_v1, NAME_v2); readers
query the stable views in schema NAME, which point at the active version. Run a new
version beside the serving one ('{{.Name}} run --version 2 --group …'); when it is
live, activate it ('run --activate-when-live' does it by itself): every view switches
in one transaction. Drop the old version when you no longer need it.

  {{.Name}} versions list [--json]
  {{.Name}} versions activate N
  {{.Name}} versions drop N          refuses the active version
`

func (s *service) runVersions(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := s.common()
	var asJSON bool
	define := func(sub string, f *cli.Flags) {
		c.register(f)
		if sub == "list" {
			f.Bool(&asJSON, "json", "", false, "print JSON")
		}
	}
	sub, f, err := cli.ParseSubcommand("versions", s.text(versionsUsage), args, stdout, define, "list", "activate", "drop")
	if sub == "" {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	v := admin.Versions{Pool: pool, Schema: c.schema, Projection: proj.Name()}
	if sub == "list" {
		infos, err := v.List(ctx)
		if err != nil {
			return err
		}
		return cli.WriteList(stdout, asJSON, infos, "VERSION\tSCHEMA\tACTIVE", func(i admin.VersionInfo) string {
			return fmt.Sprintf("%d\t%s\t%v", i.Version, i.Schema, i.Active)
		})
	}
	if len(f.Args()) != 1 {
		return fmt.Errorf("versions %s takes one argument: a version", sub)
	}
	n, err := strconv.Atoi(f.Args()[0])
	if err != nil || n < 1 {
		return fmt.Errorf("versions %s: %q is not a version", sub, f.Args()[0])
	}
	if sub == "activate" {
		if err := v.Activate(ctx, n); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "the views in schema %s now point at %s_v%d\n", proj.Name(), proj.Name(), n)
		return nil
	}
	if err := v.Drop(ctx, n); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "dropped %s_v%d\n", proj.Name(), n)
	return nil
}
