package service

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/statusview"
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

It counts the batches lost to a deadlock (40P01), each retried in halves, per
partition: stored with the positions, so over every instance and restart.

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
		return cli.WriteIndented(stdout, rep)
	}
	statusview.WriteText(stdout, rep.Status, s.name)
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
