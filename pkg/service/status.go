package service

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/snapshot"
)

const statusHelp = `{{.Name}} status: where the projection stands, per partition — stored position,
log end, lag, state, events/s and ETA (measured over --interval), parked events.
Read from PostgreSQL and Kafka, so it covers every instance and works while none runs.

Readiness is decided here, from the stored positions and the log ends, by the
--ready-lag given, and the rule is per partition: a partition is live when its lag
(log end minus stored position) is at most --ready-lag; the projection is ready when
every partition is live. The total lag is shown for information only. The default,
1000, is one default batch: a partition that keeps up with live traffic trails its
log end by at most the batch in flight. --ready-lag 0 asks for every event applied.
The report states the rule it used, and each partition's lag against it.

It also warns while any snapshot in --snapshot-dir may still hold data of a forgotten
subject (JSON: snapshots_holding_forgotten, by id): a running '{{.Name}} run' with
that folder rewrites them by itself; the warning does not change the exit status.

A projection version that has never run against this database (no stored
positions; the framework schema may not even exist yet) is reported as such, every
partition "not started", and status exits 3. status only reads: it creates nothing.

Exits 0 when ready, 3 otherwise.`

func (s *service) runStatus(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := s.common()
	var asJSON bool
	var interval time.Duration
	var readyLag int
	var effects, snapDir string
	f := cli.NewFlags("status", s.text(statusHelp))
	c.register(f)
	f.Bool(&asJSON, "json", "", false, "print JSON")
	f.Duration(&interval, "interval", "", time.Second, "sampling interval for events/s (0: none)")
	f.Int(&readyLag, "ready-lag", "PROJECTOR_READY_LAG", projector.ReadyLagDefault, readyLagUsage)
	f.String(&effects, "effects", "PROJECTOR_EFFECTS", s.effectNames(), "effects whose watermarks to report, comma-separated, or none")
	f.String(&snapDir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store, checked for snapshots that may hold forgotten subjects' data")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	if err := checkReadyLag(readyLag); err != nil {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := admin.Inspect(ctx, admin.Inspection{
		Pool: pool, Schema: c.schema, Brokers: cli.SplitList(c.brokers), Topic: c.topic,
		Projection: proj.Name(), Version: proj.Version(), ReadyLag: readyLagSetting(readyLag), Interval: interval,
		Effects: effectNames(effects),
	})
	if err != nil {
		return err
	}
	rep := StatusReport{Status: st}
	if !st.NeverRun {
		rep.SnapshotsHoldingForgotten, err = snapshotsHoldingForgotten(ctx, c, pool, proj, snapDir)
		if err != nil {
			rep.SnapshotCheck = fmt.Sprintf("cannot tell which snapshots in %s hold forgotten subjects' data: %v", snapDir, err)
		}
	}
	if err := s.writeReport(stdout, rep, asJSON, snapDir); err != nil {
		return err
	}
	if !st.Ready {
		return ExitCode(3)
	}
	return nil
}

// writeReport prints the status as JSON, or as text with the snapshots' warning.
func (s *service) writeReport(stdout io.Writer, rep StatusReport, asJSON bool, snapDir string) error {
	if asJSON {
		return writeIndented(stdout, rep)
	}
	writeStatus(stdout, rep.Status, s.name)
	switch {
	case rep.SnapshotCheck != "":
		_, _ = fmt.Fprintf(stdout, "\nwarning: %s\n", rep.SnapshotCheck)
	case len(rep.SnapshotsHoldingForgotten) > 0:
		ids := slices.Sorted(maps.Keys(rep.SnapshotsHoldingForgotten))
		_, _ = fmt.Fprintf(stdout, "\nwarning: %s\n  %s\n", s.scrubAdvice(len(ids), snapDir), strings.Join(ids, "\n  "))
	}
	return nil
}

// StatusReport is what status prints as JSON: the status, and the snapshots that may
// still hold forgotten subjects' data (id: how many subjects).
type StatusReport struct {
	projector.Status
	SnapshotsHoldingForgotten map[string]int `json:"snapshots_holding_forgotten,omitempty"`
	SnapshotCheck             string         `json:"snapshot_check_error,omitempty"`
}

func snapshotsHoldingForgotten(ctx context.Context, c *common, pool *pgxpool.Pool, proj *readmodel.Projection, dir string) (map[string]int, error) {
	forgotten, done, err := c.forgotten(ctx, pool)
	if err != nil {
		return nil, err
	}
	defer done()
	held, err := forget.InSnapshots(ctx, snapshot.FolderStore{Dir: dir}, proj, forgotten)
	if err != nil {
		return nil, err
	}
	maps.DeleteFunc(held, func(_ string, n int) bool { return n == 0 })
	return held, nil
}

// writeStatus prints the status as text: the verdict with the rule it follows, then
// a line per partition with its lag against that rule.
func writeStatus(w io.Writer, st projector.Status, name string) {
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
	if st.Deadlocks > 0 {
		_, _ = fmt.Fprintf(w, "\n%d batches lost to a deadlock, each retried in halves (projector_deadlocks_total)\n", st.Deadlocks)
	}
	for _, e := range st.StoredEffects {
		_, _ = fmt.Fprintf(w, "\neffect %s: watermark at %d, %d events behind the log end, %d parked runs\n", e.Effect, e.Position, e.Lag, e.Parked)
	}
}
