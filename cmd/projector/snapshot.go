package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/snapshot"
)

func snapshotDirDefault() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "projector", "snapshots")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "snapshots"
	}
	return filepath.Join(home, ".local", "share", "projector", "snapshots")
}

const snapshotUsage = `projector snapshot create|list|show|restore|prune|scrub: consistent snapshots of the
read model (its tables and the offsets they correspond to, one REPEATABLE READ
transaction, binary COPY per table, a manifest with row counts and SHA-256 checksums)
in a folder (--snapshot-dir).

  projector snapshot create
  projector snapshot list [--json]
  projector snapshot show ID|latest
  projector snapshot restore ID|latest     into an empty read model; verifies the
                                           checksum, the schema hash and the log start
  projector snapshot prune --keep K
  projector snapshot scrub                 rewrite the snapshots that may hold data of
                                           subjects forgotten since they were taken
                                           (run does it itself after a SubjectForgotten);
                                           a restore also purges forgotten subjects

'projector run --bootstrap latest|ID' restores before it consumes, when the read model
is empty; 'projector run --snapshot-every-events N' (and the other --snapshot-* flags)
takes them as it goes.
`

func runSnapshot(ctx context.Context, args []string, stdout, _ io.Writer) error {
	sub, err := subcommand("snapshot", snapshotUsage, args, stdout, "create", "list", "show", "restore", "prune", "scrub")
	if sub == "" {
		return err
	}
	var c common
	var dir string
	var asJSON bool
	var keep int
	f := cli.NewFlags("snapshot "+sub, snapshotUsage)
	c.register(f)
	f.String(&dir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store")
	switch sub {
	case "list":
		f.Bool(&asJSON, "json", "", false, "print JSON")
	case "prune":
		f.Int(&keep, "keep", "", 3, "snapshots to keep")
	}
	if err := f.Parse(args[1:], stdout); err != nil {
		return err
	}
	pool, proj, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := snapshot.FolderStore{Dir: dir}
	arg := func() (string, error) {
		if len(f.Args()) != 1 {
			return "", fmt.Errorf("snapshot %s takes one argument: an id or latest", sub)
		}
		if f.Args()[0] == "latest" {
			return snapshot.Latest(ctx, store, proj)
		}
		return f.Args()[0], nil
	}
	switch sub {
	case "create":
		if err := setupFramework(ctx, &c, pool, proj); err != nil {
			return err
		}
		m, err := snapshot.Take(ctx, snapshot.Source{Pool: pool, Schema: c.schema, Projection: proj, Topic: c.topic,
			Progress: tableProgress(stdout, "wrote")}, store)
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "snapshot %s: %d events, %d bytes, in %s\n", m.ID, m.Events, m.Bytes, dir)
		return nil
	case "list":
		ms, err := store.List(ctx, proj.Name(), proj.Version())
		if err != nil {
			return err
		}
		return writeList(stdout, asJSON, ms, "ID\tCREATED\tEVENTS\tBYTES", func(m snapshot.Manifest) string {
			return fmt.Sprintf("%s\t%s\t%d\t%d", m.ID, m.CreatedAt.Format(time.RFC3339), m.Events, m.Bytes)
		})
	case "show":
		id, err := arg()
		if err != nil {
			return err
		}
		m, err := snapshot.Verify(ctx, store, proj, id)
		if err != nil {
			return err
		}
		return writeIndented(stdout, m)
	case "restore":
		id, err := arg()
		if err != nil {
			return err
		}
		keys, err := c.keys(ctx, pool, proj)
		if err != nil {
			return err
		}
		m, err := restoreSnapshot(ctx, &c, pool, proj, store, id, keys, tableProgress(stdout, "loaded"))
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "restored %s: %d events; consuming resumes at its offsets\n", m.ID, m.Events)
		return nil
	case "scrub":
		keys, err := c.keys(ctx, pool, proj)
		if err != nil {
			return err
		}
		if keys == nil {
			return fmt.Errorf("snapshot scrub: %w", shred.ErrNoMasterKey)
		}
		done, err := projector.ScrubSnapshots(ctx, projector.Scrub{Pool: pool, Store: store, Projection: proj, Topic: c.topic, Keys: keys})
		for _, d := range done {
			_, _ = fmt.Fprintf(stdout, "rewrote %s as %s (%d forgotten subjects purged) in %s\n", d.Old, d.New, d.Subjects, d.Took.Round(time.Millisecond))
		}
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(stdout, "scrubbed %d snapshots\n", len(done))
		return nil
	}
	gone, err := snapshot.Prune(ctx, store, proj.Name(), proj.Version(), keep)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "pruned %d: %s\n", len(gone), strings.Join(gone, " "))
	return nil
}

// setupFramework creates the framework's tables and runs the migrations.
func setupFramework(ctx context.Context, c *common, pool *pgxpool.Pool, proj *readmodel.Projection) error {
	r, err := projector.New(projector.Config{Brokers: cli.SplitList(c.brokers), Topic: c.topic, Projection: proj, Pool: pool, Schema: c.schema})
	if err != nil {
		return err
	}
	return r.Setup(ctx)
}

// After the restore, subjects forgotten since the snapshot was taken are purged:
// the restored read model holds no more personal data than a replay would.
func restoreSnapshot(ctx context.Context, c *common, pool *pgxpool.Pool, proj *readmodel.Projection, store snapshot.Store, id string,
	keys shred.KeyStore, progress func(string, int64, int64, time.Duration)) (snapshot.Manifest, error) {
	if err := setupFramework(ctx, c, pool, proj); err != nil {
		return snapshot.Manifest{}, err
	}
	brokers := cli.SplitList(c.brokers)
	m, err := snapshot.Restore(ctx, store, id, snapshot.Target{Pool: pool, Schema: c.schema, Projection: proj, Topic: c.topic,
		LogStart: func(ctx context.Context) (map[int]int64, error) { return projector.LogStarts(ctx, brokers, c.topic) },
		Progress: progress})
	if err != nil {
		return m, err
	}
	_, err = projector.PurgeForgotten(ctx, pool, proj, keys, time.Time{})
	return m, err
}

// tableProgress prints a line per table: snapshots copy at hundreds of MB/s, so a
// line per table is the progress worth showing.
func tableProgress(out io.Writer, verb string) func(string, int64, int64, time.Duration) {
	return func(table string, rows, bytes int64, took time.Duration) {
		rate := float64(bytes) / max(took.Seconds(), 1e-6) / (1 << 20)
		_, _ = fmt.Fprintf(out, "  %s %-12s %9d rows %10d bytes  %6.1f MB/s\n", verb, table, rows, bytes, rate)
	}
}

type snapshotFlags struct {
	dir         string
	bootstrap   string
	everyEvents int
	every       time.Duration
	onTypes     string
	sync        bool
	keep        int
}

func (s *snapshotFlags) register(f *cli.Flags) {
	f.String(&s.dir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store")
	f.String(&s.bootstrap, "bootstrap", "PROJECTOR_BOOTSTRAP", "", "restore this snapshot (an id, or latest) first when the read model is empty")
	f.Int(&s.everyEvents, "snapshot-every-events", "PROJECTOR_SNAPSHOT_EVERY_EVENTS", 0, "snapshot after this many events (0: off)")
	f.Duration(&s.every, "snapshot-every", "PROJECTOR_SNAPSHOT_EVERY", 0, "snapshot at this interval (0: off)")
	f.String(&s.onTypes, "snapshot-on", "PROJECTOR_SNAPSHOT_ON", "", "snapshot after applying an event of these types, comma-separated")
	f.Bool(&s.sync, "snapshot-sync", "PROJECTOR_SNAPSHOT_SYNC", false, "take snapshots at a batch boundary, the triggering partition waiting (default: beside the workers)")
	f.Int(&s.keep, "snapshot-keep", "PROJECTOR_SNAPSHOT_KEEP", 3, "snapshots to keep")
}

// open bootstraps from a snapshot if asked and the read model is empty, and returns
// the snapshot policy (nil when no trigger is set).
func (s *snapshotFlags) open(ctx context.Context, c *common, pool *pgxpool.Pool, proj *readmodel.Projection, keys shred.KeyStore, log *zap.Logger) (*projector.SnapshotPolicy, error) {
	if s.everyEvents < 0 || s.every < 0 || s.keep < 1 {
		return nil, fmt.Errorf("--snapshot-every-events %d and --snapshot-every %v must not be negative, --snapshot-keep %d at least 1",
			s.everyEvents, s.every, s.keep)
	}
	store := snapshot.FolderStore{Dir: s.dir}
	if s.bootstrap != "" {
		if err := setupFramework(ctx, c, pool, proj); err != nil {
			return nil, err
		}
		pos, err := projector.Inspect(ctx, projector.Inspection{Pool: pool, Schema: c.schema, Brokers: cli.SplitList(c.brokers),
			Topic: c.topic, Projection: proj.Name(), Version: proj.Version()})
		if err != nil {
			return nil, err
		}
		started := false
		for _, p := range pos.Partitions {
			started = started || p.Next > 0
		}
		if started {
			log.Info("--bootstrap ignored: the read model already has stored offsets", zap.String("bootstrap", s.bootstrap))
		} else {
			id := s.bootstrap
			if id == "latest" {
				if id, err = snapshot.Latest(ctx, store, proj); err != nil {
					return nil, fmt.Errorf("--bootstrap latest: %w", err)
				}
			}
			start := time.Now()
			m, err := restoreSnapshot(ctx, c, pool, proj, store, id, keys, func(table string, rows, bytes int64, took time.Duration) {
				log.Info("restored a table", zap.String("table", table), zap.Int64("rows", rows), zap.Int64("bytes", bytes), zap.Duration("took", took))
			})
			switch {
			case errors.Is(err, snapshot.ErrNotEmpty):
				log.Info("--bootstrap: another instance restored first", zap.String("bootstrap", s.bootstrap))
			case err != nil:
				return nil, fmt.Errorf("--bootstrap %s: %w", s.bootstrap, err)
			default:
				log.Info("bootstrapped from a snapshot", zap.String("id", m.ID), zap.Int64("events", m.Events), zap.Duration("took", time.Since(start)))
			}
		}
	}
	if s.everyEvents == 0 && s.every == 0 && s.onTypes == "" {
		return nil, nil
	}
	return &projector.SnapshotPolicy{Store: store, EveryEvents: int64(s.everyEvents), Every: s.every,
		OnTypes: cli.SplitList(s.onTypes), Sync: s.sync, Keep: s.keep}, nil
}
