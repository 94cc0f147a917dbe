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
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/forget"
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
  projector snapshot list [--json]         with, per snapshot, how many forgotten
                                           subjects' data it may still hold
  projector snapshot show ID|latest
  projector snapshot restore ID|latest     into an empty read model; verifies the
                                           checksum, the schema hash and the log start
  projector snapshot prune --keep K
  projector snapshot scrub                 rewrite now the snapshots that may hold data
                                           of forgotten subjects (run does it by itself)

'projector run --bootstrap latest|ID' restores before it consumes, when the read model
is empty; 'projector run --snapshot-every-events N' (and the other --snapshot-* flags)
takes them as it goes.

Forgotten subjects: a snapshot holds the read model as it was, personal data
included. Only a rewrite proves one clean: restored into a scratch schema, every
subject forgotten since it was taken purged, taken again (same offsets and creation
time, a new id; "scrubbed_through" in its manifest) and the old one deleted. Any
'projector run' with this --snapshot-dir does that by itself, whoever wrote the
snapshots: at start, within a second of applying a SubjectForgotten, and every
--scrub-every; 'snapshot list' and 'status' show the snapshots still waiting for it.
Every restore also purges every forgotten subject, so even a stale copy restores clean.
`

func runSnapshot(ctx context.Context, args []string, stdout, _ io.Writer) error {
	var c common
	var dir string
	var asJSON bool
	var keep int
	define := func(sub string, f *cli.Flags) {
		c.register(f)
		f.String(&dir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store")
		switch sub {
		case "list":
			f.Bool(&asJSON, "json", "", false, "print JSON")
		case "prune":
			f.Int(&keep, "keep", "", 3, "snapshots to keep")
		}
	}
	sub, err := subcommand("snapshot", snapshotUsage, args, stdout, define, "create", "list", "show", "restore", "prune", "scrub")
	if sub == "" {
		return err
	}
	f := cli.NewFlags("snapshot "+sub, snapshotUsage)
	define(sub, f)
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
		forgotten, closeKeys, err := c.forgotten(ctx, pool)
		if err != nil {
			return err
		}
		defer closeKeys()
		held, err := forget.InSnapshots(ctx, store, proj, forgotten)
		if err != nil {
			return err
		}
		items := make([]listedSnapshot, len(ms))
		waiting := 0
		for i, m := range ms {
			items[i] = listedSnapshot{Manifest: m, ForgottenSubjects: held[m.ID]}
			if held[m.ID] > 0 {
				waiting++
			}
		}
		err = writeList(stdout, asJSON, items, "ID\tCREATED\tEVENTS\tBYTES\tSCRUBBED THROUGH\tMAY HOLD FORGOTTEN", func(m listedSnapshot) string {
			through, may := "-", "no"
			if !m.ScrubbedThrough.IsZero() {
				through = m.ScrubbedThrough.Format(time.RFC3339)
			}
			switch {
			case m.ForgottenSubjects == 1:
				may = "1 subject"
			case m.ForgottenSubjects > 1:
				may = fmt.Sprintf("%d subjects", m.ForgottenSubjects)
			}
			return fmt.Sprintf("%s\t%s\t%d\t%d\t%s\t%s", m.ID, m.CreatedAt.Format(time.RFC3339), m.Events, m.Bytes, through, may)
		})
		if err == nil && !asJSON && waiting > 0 {
			_, _ = fmt.Fprintf(stdout, "\n%s\n", scrubAdvice(waiting, dir))
		}
		return err
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
		if len(f.Args()) != 1 {
			return errors.New("snapshot restore takes one argument: an id or latest")
		}
		id := f.Args()[0] // latest is resolved under the store's lock
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
		done, err := forget.ScrubSnapshots(ctx, forget.Scrub{Pool: pool, Store: store, Projection: proj, Topic: c.topic, Keys: keys})
		if errors.Is(err, forget.ErrScrubBusy) {
			return fmt.Errorf("snapshot scrub: %w (a running 'projector run' with this --snapshot-dir, most likely): try again when it is done", err)
		}
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

// listedSnapshot is a line of 'snapshot list': the manifest, and how many forgotten
// subjects' data the snapshot may still hold.
type listedSnapshot struct {
	snapshot.Manifest
	ForgottenSubjects int `json:"forgotten_subjects"`
}

// scrubAdvice says what happens to snapshots that may hold forgotten subjects' data.
func scrubAdvice(n int, dir string) string {
	return fmt.Sprintf("%d snapshot(s) in %s may still hold data of forgotten subjects: a running 'projector run --snapshot-dir %s'\n"+
		"rewrites them without it (at start, after applying a SubjectForgotten, and every --scrub-every); 'projector snapshot scrub' does it now.", n, dir, dir)
}

// setupFramework creates the framework's tables and runs the migrations.
func setupFramework(ctx context.Context, c *common, pool *pgxpool.Pool, proj *readmodel.Projection) error {
	r, err := projector.New(projector.Config{Brokers: cli.SplitList(c.brokers), Topic: c.topic, Projection: proj, Pool: pool, Schema: c.schema})
	if err != nil {
		return err
	}
	return r.Setup(ctx)
}

// restoreSnapshot restores the snapshot id, or the newest when id is "latest". After
// the restore, subjects forgotten since the snapshot was taken are purged:
// the restored read model holds no more personal data than a replay would.
func restoreSnapshot(ctx context.Context, c *common, pool *pgxpool.Pool, proj *readmodel.Projection, store snapshot.Store, id string,
	keys shred.KeyStore, progress func(string, int64, int64, time.Duration)) (snapshot.Manifest, error) {
	if err := setupFramework(ctx, c, pool, proj); err != nil {
		return snapshot.Manifest{}, err
	}
	brokers := cli.SplitList(c.brokers)
	dst := snapshot.Target{Pool: pool, Schema: c.schema, Projection: proj, Topic: c.topic,
		LogStart: func(ctx context.Context) (map[int]int64, error) { return admin.LogStarts(ctx, brokers, c.topic) },
		Progress: progress}
	var m snapshot.Manifest
	var err error
	if id == "latest" {
		// A running scrubber may rewrite the newest one meanwhile: then its new id.
		m, err = snapshot.RestoreNewest(ctx, store, nil, dst)
	} else {
		m, err = snapshot.Restore(ctx, store, id, dst)
	}
	if err != nil {
		return m, err
	}
	_, err = forget.Purge(ctx, pool, proj, keys, time.Time{})
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
	scrubEvery  time.Duration
	bootstrap   string
	everyEvents int
	every       time.Duration
	onTypes     string
	sync        bool
	keep        int
}

func (s *snapshotFlags) register(f *cli.Flags) {
	f.String(&s.dir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store; run keeps it free of forgotten subjects' data, whatever wrote the snapshots")
	f.Duration(&s.scrubEvery, "scrub-every", "PROJECTOR_SCRUB_EVERY", projector.ScrubEveryDefault,
		"how often --snapshot-dir is checked for snapshots that may hold forgotten subjects' data, besides at start and after applying a SubjectForgotten")
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
	if err := positive("--scrub-every (PROJECTOR_SCRUB_EVERY)", s.scrubEvery); err != nil {
		return nil, err
	}
	if s.everyEvents < 0 || s.every < 0 || s.keep < 1 {
		return nil, fmt.Errorf("--snapshot-every-events %d and --snapshot-every %v must not be negative, --snapshot-keep %d at least 1",
			s.everyEvents, s.every, s.keep)
	}
	store := snapshot.FolderStore{Dir: s.dir}
	if s.bootstrap != "" {
		if err := setupFramework(ctx, c, pool, proj); err != nil {
			return nil, err
		}
		pos, err := admin.Inspect(ctx, admin.Inspection{Pool: pool, Schema: c.schema, Brokers: cli.SplitList(c.brokers),
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
			start := time.Now()
			m, err := restoreSnapshot(ctx, c, pool, proj, store, s.bootstrap, keys, func(table string, rows, bytes int64, took time.Duration) {
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
