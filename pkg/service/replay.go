package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/statusview"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/snapshot"
)

const replayHelp = `{{.Name}} replay --until TIME|OFFSETS --into SCHEMA: build the read model as it was at a
point of the log, in schema SCHEMA beside the live one, to reproduce a bug: from the
newest snapshot at or before the point (--snapshot-dir), then the log up to it.

  --until 2026-11-26T14:00:00Z      events appended before this time (Kafka timestamps)
  --until 0:1200,1:1187,2:1250      the first offset not applied, per partition
                                    (partitions not named: nothing applied)

Effects never fire in a replay. Drop the schema (and SCHEMA_projector) when done.`

func (s *service) runReplay(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := s.common()
	var until, into, dir string
	f := cli.NewFlags("replay", s.text(replayHelp))
	c.register(f)
	f.String(&until, "until", "", "", "the point: an RFC 3339 time, or PARTITION:OFFSET,… (required)")
	f.String(&into, "into", "", "", "target schema (required)")
	f.String(&dir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	if until == "" || into == "" {
		return errors.New("replay needs --until and --into")
	}
	pit := admin.PointInTime{Brokers: cli.SplitList(c.brokers), Topic: c.topic, Into: into, Store: snapshot.FolderStore{Dir: dir}}
	if err := parseUntil(until, &pit); err != nil {
		return err
	}
	log, err := cli.NewLogger(c.logLevel)
	if err != nil {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	keys, err := c.keys(ctx, pool, proj)
	if err != nil {
		return err
	}
	pit.Pool, pit.Projection, pit.Logger, pit.Keys = pool, proj, log, keys
	if cli.IsTerminal(os.Stderr) {
		pit.Started = func(ctx context.Context, r *projector.Runner) func() {
			ctx, cancel := context.WithCancel(ctx)
			wait := statusview.ProgressBar(ctx, r, os.Stderr)
			return func() { cancel(); wait() }
		}
	}
	start := time.Now()
	res, err := admin.ReplayUntil(ctx, pit)
	if err != nil {
		return err
	}
	from := "offset zero"
	if res.Snapshot != "" {
		from = "snapshot " + res.Snapshot
	}
	_, _ = fmt.Fprintf(stdout, "schema %s holds %s as of %d events (from %s, %d replayed, %v)\n",
		into, proj.Name(), res.Events, from, res.Replayed, time.Since(start).Round(time.Millisecond))
	return nil
}

// parseUntil reads --until into pit: an RFC 3339 time, or PARTITION:OFFSET,….
func parseUntil(until string, pit *admin.PointInTime) error {
	if !strings.Contains(until, ":") || strings.Contains(until, "T") {
		t, err := time.Parse(time.RFC3339, until)
		if err != nil {
			return fmt.Errorf("--until: %q is neither an RFC 3339 time nor PARTITION:OFFSET,…", until)
		}
		pit.UntilTime = t
		return nil
	}
	pit.Until = map[int]int64{}
	for _, pair := range cli.SplitList(until) {
		ps, os, ok := strings.Cut(pair, ":")
		p, err1 := strconv.Atoi(ps)
		o, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || p < 0 || o < 0 {
			return fmt.Errorf("--until: %q is not PARTITION:OFFSET", pair)
		}
		pit.Until[p] = o
	}
	return nil
}
