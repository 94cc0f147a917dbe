package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/admin"
)

const dlqUsage = `{{.Name}} dlq list|retry|skip: parked events and parked effect runs.

  {{.Name}} dlq list [--effects] [--all] [--json]
  {{.Name}} dlq retry --subjects A,B | --all      retry parked events, in order, after a fix
  {{.Name}} dlq retry --effects [--effect NAME]   retry parked effect runs
  {{.Name}} dlq skip --ids 12,13                  give up on parked events (they count as
                                                  consumed; the events behind them go on)

Parked events are events that failed permanently — undecodable, a failing handler or
statement, a sequence gap under --gaps halt — and the later events of the same
aggregate parked behind them. Retries and skips are carried out by the projector that
owns the partition, within a second; nothing happens while no projector runs.
`

// dlqCmd is one 'dlq': its settings.
type dlqCmd struct {
	c                     *common
	asJSON, all, effects  bool
	subjects, effect, ids string
}

func (d *dlqCmd) define(sub string, f *cli.Flags) {
	d.c.register(f)
	switch sub {
	case "list":
		f.Bool(&d.asJSON, "json", "", false, "print JSON")
		f.Bool(&d.all, "all", "", false, "include resolved ones")
		f.Bool(&d.effects, "effects", "", false, "list parked effect runs instead of parked events")
	case "retry":
		f.String(&d.subjects, "subjects", "", "", "aggregates (subjects) to retry, comma-separated")
		f.Bool(&d.all, "all", "", false, "retry every parked aggregate")
		f.Bool(&d.effects, "effects", "", false, "retry parked effect runs instead of parked events")
		f.String(&d.effect, "effect", "", "", "with --effects: only this effect")
	case "skip":
		f.String(&d.ids, "ids", "", "", "ids of parked events to skip, comma-separated (see dlq list)")
	}
}

func (s *service) runDLQ(ctx context.Context, args []string, stdout, _ io.Writer) error {
	d := &dlqCmd{c: s.common()}
	sub, _, err := cli.ParseSubcommand("dlq", s.text(dlqUsage), args, stdout, d.define, "list", "retry", "skip")
	if sub == "" {
		return err
	}
	pool, proj, err := d.c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	q := admin.NewDLQ(pool, d.c.schema, proj.Name(), proj.Version())
	switch sub {
	case "retry":
		return d.retry(ctx, q, stdout)
	case "skip":
		return d.skip(ctx, q, stdout)
	}
	return d.list(ctx, q, stdout)
}

func (d *dlqCmd) retry(ctx context.Context, q *admin.DLQ, stdout io.Writer) error {
	var n int64
	var err error
	switch {
	case d.effects:
		n, err = q.RequestEffectRetry(ctx, d.effect)
	case d.subjects == "" && !d.all:
		return errors.New("dlq retry: name --subjects, or pass --all or --effects")
	default:
		n, err = q.RequestRetry(ctx, cli.SplitList(d.subjects))
	}
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "marked %d for retry; the projector owning each partition runs them in order\n", n)
	return nil
}

func (d *dlqCmd) skip(ctx context.Context, q *admin.DLQ, stdout io.Writer) error {
	var list []int64
	for _, s := range cli.SplitList(d.ids) {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("--ids: %q is not an id", s)
		}
		list = append(list, id)
	}
	if len(list) == 0 {
		return errors.New("dlq skip: name --ids")
	}
	n, err := q.RequestSkip(ctx, list)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "marked %d of %d to skip\n", n, len(list))
	return nil
}

func (d *dlqCmd) list(ctx context.Context, q *admin.DLQ, stdout io.Writer) error {
	if d.effects {
		parked, err := q.ListEffects(ctx, d.all)
		if err != nil {
			return err
		}
		return cli.WriteList(stdout, d.asJSON, parked, "ID\tEFFECT\tPARTITION\tOFFSET\tEVENT\tSTATE\tATTEMPTS\tERROR",
			func(p admin.ParkedEffect) string {
				return fmt.Sprintf("%d\t%s\t%d\t%d\t%s\t%s\t%d\t%s", p.ID, p.Effect, p.Partition, p.Offset, p.EventID, p.State, p.Attempts, cli.OneLine(p.Error))
			})
	}
	parked, err := q.List(ctx, d.all)
	if err != nil {
		return err
	}
	if len(parked) == 0 && !d.asJSON {
		_, _ = fmt.Fprintln(stdout, "no parked events")
		return nil
	}
	return cli.WriteList(stdout, d.asJSON, parked, "ID\tPARTITION\tOFFSET\tSUBJECT\tTYPE\tSTATE\tATTEMPTS\tERROR",
		func(p admin.Parked) string {
			return fmt.Sprintf("%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s", p.ID, p.Partition, p.Offset, p.Subject, p.EventType, p.State, p.Attempts, cli.OneLine(p.Error))
		})
}
