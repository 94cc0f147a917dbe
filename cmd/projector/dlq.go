package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/admin"
)

const dlqUsage = `projector dlq list|retry|skip: parked events and parked effect runs.

  projector dlq list [--effects] [--all] [--json]
  projector dlq retry --subjects A,B | --all      retry parked events, in order, after a fix
  projector dlq retry --effects [--effect NAME]   retry parked effect runs
  projector dlq skip --ids 12,13                  give up on parked events (they count as
                                                  consumed; the events behind them go on)

Parked events are events that failed permanently — undecodable, a failing handler or
statement, a sequence gap under --gaps halt — and the later events of the same
aggregate parked behind them. Retries and skips are carried out by the projector that
owns the partition, within a second; nothing happens while no projector runs.
`

func runDLQ(ctx context.Context, args []string, stdout, _ io.Writer) error {
	var c common
	var asJSON, all, effects bool
	var subjects, effect, ids string
	define := func(sub string, f *cli.Flags) {
		c.register(f)
		switch sub {
		case "list":
			f.Bool(&asJSON, "json", "", false, "print JSON")
			f.Bool(&all, "all", "", false, "include resolved ones")
			f.Bool(&effects, "effects", "", false, "list parked effect runs instead of parked events")
		case "retry":
			f.String(&subjects, "subjects", "", "", "aggregates (subjects) to retry, comma-separated")
			f.Bool(&all, "all", "", false, "retry every parked aggregate")
			f.Bool(&effects, "effects", "", false, "retry parked effect runs instead of parked events")
			f.String(&effect, "effect", "", "", "with --effects: only this effect")
		case "skip":
			f.String(&ids, "ids", "", "", "ids of parked events to skip, comma-separated (see dlq list)")
		}
	}
	sub, err := subcommand("dlq", dlqUsage, args, stdout, define, "list", "retry", "skip")
	if sub == "" {
		return err
	}
	f := cli.NewFlags("dlq "+sub, dlqUsage)
	define(sub, f)
	if err := f.Parse(args[1:], stdout); err != nil {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	q := admin.NewDLQ(pool, c.schema, proj.Name(), proj.Version())
	switch sub {
	case "retry":
		var n int64
		switch {
		case effects:
			n, err = q.RequestEffectRetry(ctx, effect)
		case subjects == "" && !all:
			return errors.New("dlq retry: name --subjects, or pass --all or --effects")
		default:
			n, err = q.RequestRetry(ctx, cli.SplitList(subjects))
		}
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "marked %d for retry; the projector owning each partition runs them in order\n", n)
		return nil
	case "skip":
		var list []int64
		for _, s := range cli.SplitList(ids) {
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
	if effects {
		parked, err := q.ListEffects(ctx, all)
		if err != nil {
			return err
		}
		return writeList(stdout, asJSON, parked, "ID\tEFFECT\tPARTITION\tOFFSET\tEVENT\tSTATE\tATTEMPTS\tERROR",
			func(p admin.ParkedEffect) string {
				return fmt.Sprintf("%d\t%s\t%d\t%d\t%s\t%s\t%d\t%s", p.ID, p.Effect, p.Partition, p.Offset, p.EventID, p.State, p.Attempts, short(p.Error))
			})
	}
	parked, err := q.List(ctx, all)
	if err != nil {
		return err
	}
	if len(parked) == 0 && !asJSON {
		_, _ = fmt.Fprintln(stdout, "no parked events")
		return nil
	}
	return writeList(stdout, asJSON, parked, "ID\tPARTITION\tOFFSET\tSUBJECT\tTYPE\tSTATE\tATTEMPTS\tERROR",
		func(p admin.Parked) string {
			return fmt.Sprintf("%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s", p.ID, p.Partition, p.Offset, p.Subject, p.EventType, p.State, p.Attempts, short(p.Error))
		})
}

// writeList prints items as indented JSON, or as a table under header, a row each.
func writeList[T any](w io.Writer, asJSON bool, items []T, header string, row func(T) string) error {
	if asJSON {
		return writeIndented(w, items)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, header)
	for _, it := range items {
		_, _ = fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

func short(msg string) string {
	if len(msg) > 100 {
		msg = msg[:100] + "…"
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
