package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/projector"
)

func runDLQ(ctx context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "retry") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			_, _ = fmt.Fprintln(stdout, "projector dlq list|retry: see 'projector dlq list --help' and 'projector dlq retry --help'")
			return nil
		}
		return errors.New("dlq takes a subcommand: list or retry")
	}
	sub := args[0]
	var c common
	var asJSON, all bool
	var subjects string
	help := `projector dlq list: parked events — events that failed permanently (undecodable,
a failing handler or statement) and the events of the same aggregate parked behind
them, with the error, topic, partition, offset and attempts.`
	if sub == "retry" {
		help = `projector dlq retry --subjects S1,S2 | --all: after a fix, ask the running projector
to apply the parked events of these aggregates again, in order. An event that fails
again stays parked, with the events behind it. Nothing happens while no projector
runs; the next one to start picks the request up.`
	}
	f := cli.NewFlags("dlq "+sub, help)
	c.register(f)
	if sub == "list" {
		f.Bool(&asJSON, "json", "", false, "print JSON")
		f.Bool(&all, "all", "", false, "include resolved events")
	} else {
		f.String(&subjects, "subjects", "", "", "aggregates (subjects) to retry, comma-separated")
		f.Bool(&all, "all", "", false, "retry every parked aggregate")
	}
	if err := f.Parse(args[1:], stdout); err != nil {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	q := projector.NewDLQ(pool, c.schema, proj.Name(), proj.Version())
	if sub == "retry" {
		list := cli.SplitList(subjects)
		if len(list) == 0 && !all {
			return errors.New("dlq retry: name --subjects or pass --all")
		}
		n, err := q.RequestRetry(ctx, list)
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "marked %d parked events for retry; the projector owning each partition applies them in order\n", n)
		return nil
	}
	parked, err := q.List(ctx, all)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(parked)
	}
	if len(parked) == 0 {
		_, _ = fmt.Fprintln(stdout, "no parked events")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "PARTITION\tOFFSET\tSUBJECT\tTYPE\tSTATE\tATTEMPTS\tERROR")
	for _, p := range parked {
		msg := p.Error
		if len(msg) > 100 {
			msg = msg[:100] + "…"
		}
		_, _ = fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%d\t%s\n", p.Partition, p.Offset, p.Subject, p.EventType, p.State, p.Attempts, strings.ReplaceAll(msg, "\n", " "))
	}
	return tw.Flush()
}
