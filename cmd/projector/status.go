package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/projector"
)

func runStatus(ctx context.Context, args []string, stdout, _ io.Writer) error {
	var c common
	var asJSON bool
	var interval time.Duration
	var readyLag int
	var effects string
	f := cli.NewFlags("status", `projector status: where the projection stands, per partition — stored position,
log end, lag, state, events/s and ETA (measured over --interval), parked events.
Read from PostgreSQL and Kafka, so it covers every instance and works while none runs.
Exits 0 when every partition is live, 3 otherwise.`)
	c.register(f)
	f.Bool(&asJSON, "json", "", false, "print JSON")
	f.Duration(&interval, "interval", "", time.Second, "sampling interval for events/s (0: none)")
	f.Int(&readyLag, "ready-lag", "PROJECTOR_READY_LAG", projector.ReadyLagDefault, "a partition is live when its lag is at most this")
	f.String(&effects, "effects", "PROJECTOR_EFFECTS", EffectsDefault, "effects whose watermarks to report, comma-separated, or none")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := projector.Inspect(ctx, projector.Inspection{
		Pool: pool, Schema: c.schema, Brokers: cli.SplitList(c.brokers), Topic: c.topic,
		Projection: proj.Name(), Version: proj.Version(), ReadyLag: int64(readyLag), Interval: interval,
		Effects: effectNames(effects),
	})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		_, _ = fmt.Fprintf(stdout, "projection %s v%d on topic %s: lag %d, ready %v\n\n", st.Projection, st.Version, st.Topic, st.Lag, st.Ready)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		_, _ = fmt.Fprintln(tw, "partition\tstate\tposition\tend\tlag\tevents/s\tETA\tparked\t")
		for _, p := range st.Partitions {
			eta := "-"
			if p.ETASeconds > 0 {
				eta = (time.Duration(p.ETASeconds * float64(time.Second))).Round(time.Second).String()
			}
			_, _ = fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%.0f\t%s\t%d\t\n", p.Partition, p.State, p.Next, p.HighWater, p.Lag, p.EventsPerSec, eta, p.Parked)
		}
		_ = tw.Flush()
		for eff, lag := range st.EffectLag {
			_, _ = fmt.Fprintf(stdout, "\neffect %s: %d events behind the log end\n", eff, lag)
		}
	}
	if !st.Ready {
		return exitCode(3)
	}
	return nil
}

// exitCode is an error that only sets the process's exit status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func effectNames(s string) []string {
	names := cli.SplitList(s)
	if len(names) == 1 && names[0] == "none" {
		return nil
	}
	return names
}
