package statusview

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/projector/projector/pkg/projector"
)

// WriteText prints the status as text: the verdict with the rule it follows, then
// a line per partition with its lag against that rule. name is the service's command,
// named in the advice for a projection that never ran.
func WriteText(w io.Writer, st projector.Status, name string) {
	behind := 0
	for _, p := range st.Partitions {
		if p.State != projector.StateLive {
			behind++
		}
	}
	verdict := fmt.Sprintf("ready: every partition's lag is at most %d", st.ReadyLag)
	switch {
	case st.NeverRun:
		var end int64
		for _, p := range st.Partitions {
			end += p.HighWater
		}
		_, _ = fmt.Fprintf(w, "projection %s v%d on topic %s: NEVER RUN: no stored positions in this database; "+
			"'%s run' builds it from offset zero (%d events in the log).\n", st.Projection, st.Version, st.Topic, name, end)
		return
	case !st.Ready:
		verdict = fmt.Sprintf("NOT READY: %d of %d partitions are not live", behind, len(st.Partitions))
	}
	_, _ = fmt.Fprintf(w, "projection %s v%d on topic %s: %s\n", st.Projection, st.Version, st.Topic, verdict)
	_, _ = fmt.Fprintf(w, "rule: --ready-lag %d, per partition: a partition is live when its lag (log end minus position) is at most %d;\n"+
		"      ready when every partition is live. Total lag %d (for information; not the rule).\n\n", st.ReadyLag, st.ReadyLag, st.Lag)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "partition\tstate\tposition\tend\tlag\tvs --ready-lag\tevents/s\tETA\tparked\t")
	for _, p := range st.Partitions {
		eta := "-"
		if p.ETASeconds > 0 {
			eta = (time.Duration(p.ETASeconds * float64(time.Second))).Round(time.Second).String()
		}
		cmp := fmt.Sprintf("%d <= %d", p.Lag, st.ReadyLag)
		if p.Lag > st.ReadyLag {
			cmp = fmt.Sprintf("%d > %d", p.Lag, st.ReadyLag)
		}
		_, _ = fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%.0f\t%s\t%d\t\n", p.Partition, p.State, p.Next, p.HighWater, p.Lag, cmp, p.EventsPerSec, eta, p.Parked)
	}
	_ = tw.Flush()
	writeDeadlocks(w, st)
	for _, e := range st.StoredEffects {
		_, _ = fmt.Fprintf(w, "\neffect %s: watermark at %d, %d events behind the log end, %d parked runs\n", e.Effect, e.Position, e.Lag, e.Parked)
	}
}

// writeDeadlocks says how many batches were lost to a deadlock, and on which
// partitions: in the stored status, over every instance and restart.
func writeDeadlocks(w io.Writer, st projector.Status) {
	if st.Deadlocks == 0 {
		return
	}
	var on []string
	for _, p := range st.Partitions {
		if p.Deadlocks > 0 {
			on = append(on, fmt.Sprintf("%d on partition %d", p.Deadlocks, p.Partition))
		}
	}
	_, _ = fmt.Fprintf(w, "\n%d batches lost to a deadlock (40P01), each retried in halves: %s\n", st.Deadlocks, strings.Join(on, ", "))
}
