package service

import (
	"context"
	"errors"
	"fmt"
	"io"
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

const snapshotUsage = `{{.Name}} snapshot create|list|show|restore|prune|scrub: consistent snapshots of the
read model (its tables and the offsets they correspond to, one REPEATABLE READ
transaction, binary COPY per table, a manifest with row counts and SHA-256 checksums)
in a folder (--snapshot-dir).

  {{.Name}} snapshot create
  {{.Name}} snapshot list [--json]         with, per snapshot, how many forgotten
                                           subjects' data it may still hold
  {{.Name}} snapshot show ID|latest
  {{.Name}} snapshot restore ID|latest     into an empty read model; verifies the
                                           checksum, the schema hash and the log start
  {{.Name}} snapshot prune --keep K
  {{.Name}} snapshot scrub                 rewrite now the snapshots that may hold data
                                           of forgotten subjects (run does it by itself)

'{{.Name}} run --bootstrap latest|ID' restores before it consumes, when the read model
is empty; '{{.Name}} run --snapshot-every-events N' (and the other --snapshot-* flags)
takes them as it goes.

Forgotten subjects: a snapshot holds the read model as it was, personal data
included. Only a rewrite proves one clean: restored into a scratch schema, every
subject forgotten since it was taken purged, taken again (same offsets and creation
time, a new id; "scrubbed_through" in its manifest) and the old one deleted. Any
'{{.Name}} run' with this --snapshot-dir does that by itself, whoever wrote the
snapshots: at start, within a second of applying a SubjectForgotten, and every
--scrub-every; 'snapshot list' and 'status' show the snapshots still waiting for it.
Every restore also purges every forgotten subject, so even a stale copy restores clean.
`

// snapCmd is one 'snapshot': its settings, then what it opened.
type snapCmd struct {
	svc    *service
	c      *common
	dir    string
	asJSON bool
	keep   int

	pool  *pgxpool.Pool
	proj  *readmodel.Projection
	store snapshot.FolderStore
	args  []string
}

func (sc *snapCmd) define(sub string, f *cli.Flags) {
	sc.c.register(f)
	f.String(&sc.dir, "snapshot-dir", "PROJECTOR_SNAPSHOT_DIR", snapshotDirDefault(), "folder of the snapshot store")
	switch sub {
	case "list":
		f.Bool(&sc.asJSON, "json", "", false, "print JSON")
	case "prune":
		f.Int(&sc.keep, "keep", "", 3, "snapshots to keep")
	}
}

func (s *service) runSnapshot(ctx context.Context, args []string, stdout, _ io.Writer) error {
	sc := &snapCmd{svc: s, c: s.common()}
	sub, f, err := cli.ParseSubcommand("snapshot", s.text(snapshotUsage), args, stdout, sc.define, "create", "list", "show", "restore", "prune", "scrub")
	if sub == "" {
		return err
	}
	if sc.pool, sc.proj, err = sc.c.open(ctx); err != nil {
		return err
	}
	defer sc.pool.Close()
	sc.store, sc.args = snapshot.FolderStore{Dir: sc.dir}, f.Args()
	subs := map[string]func(context.Context, io.Writer) error{
		"create": sc.create, "list": sc.list, "show": sc.show, "restore": sc.restore, "scrub": sc.scrub, "prune": sc.prune,
	}
	return subs[sub](ctx, stdout)
}

// arg is the one argument: an id, or latest resolved to the newest's id.
func (sc *snapCmd) arg(ctx context.Context, sub string) (string, error) {
	if len(sc.args) != 1 {
		return "", fmt.Errorf("snapshot %s takes one argument: an id or latest", sub)
	}
	if sc.args[0] == "latest" {
		return snapshot.Latest(ctx, sc.store, sc.proj)
	}
	return sc.args[0], nil
}

func (sc *snapCmd) create(ctx context.Context, stdout io.Writer) error {
	if err := setupFramework(ctx, sc.c, sc.pool, sc.proj); err != nil {
		return err
	}
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: sc.pool, Schema: sc.c.schema, Projection: sc.proj, Topic: sc.c.topic,
		Progress: cli.TableProgress(stdout, "wrote")}, sc.store)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "snapshot %s: %d events, %d bytes, in %s\n", m.ID, m.Events, m.Bytes, sc.dir)
	return nil
}

func (sc *snapCmd) list(ctx context.Context, stdout io.Writer) error {
	ms, err := sc.store.List(ctx, sc.proj.Name(), sc.proj.Version())
	if err != nil {
		return err
	}
	forgotten, closeKeys, err := sc.c.forgotten(ctx, sc.pool)
	if err != nil {
		return err
	}
	defer closeKeys()
	held, err := forget.InSnapshots(ctx, sc.store, sc.proj, forgotten)
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
	err = cli.WriteList(stdout, sc.asJSON, items, "ID\tCREATED\tEVENTS\tBYTES\tSCRUBBED THROUGH\tMAY HOLD FORGOTTEN", listedSnapshot.row)
	if err == nil && !sc.asJSON && waiting > 0 {
		_, _ = fmt.Fprintf(stdout, "\n%s\n", sc.svc.scrubAdvice(waiting, sc.dir))
	}
	return err
}

func (sc *snapCmd) show(ctx context.Context, stdout io.Writer) error {
	id, err := sc.arg(ctx, "show")
	if err != nil {
		return err
	}
	m, err := snapshot.Verify(ctx, sc.store, sc.proj, id)
	if err != nil {
		return err
	}
	return cli.WriteIndented(stdout, m)
}

func (sc *snapCmd) restore(ctx context.Context, stdout io.Writer) error {
	if len(sc.args) != 1 {
		return errors.New("snapshot restore takes one argument: an id or latest")
	}
	id := sc.args[0] // latest is resolved under the store's lock
	keys, err := sc.c.keys(ctx, sc.pool, sc.proj)
	if err != nil {
		return err
	}
	m, err := restoreSnapshot(ctx, sc.c, sc.pool, sc.proj, sc.store, id, keys, cli.TableProgress(stdout, "loaded"))
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "restored %s: %d events; consuming resumes at its offsets\n", m.ID, m.Events)
	return nil
}

func (sc *snapCmd) scrub(ctx context.Context, stdout io.Writer) error {
	keys, err := sc.c.keys(ctx, sc.pool, sc.proj)
	if err != nil {
		return err
	}
	if keys == nil {
		return fmt.Errorf("snapshot scrub: %w", shred.ErrNoMasterKey)
	}
	done, err := forget.ScrubSnapshots(ctx, forget.Scrub{Pool: sc.pool, Store: sc.store, Projection: sc.proj, Topic: sc.c.topic, Keys: keys})
	if errors.Is(err, forget.ErrScrubBusy) {
		return fmt.Errorf("snapshot scrub: %w (a running '%s run' with this --snapshot-dir, most likely): try again when it is done", err, sc.svc.name)
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

func (sc *snapCmd) prune(ctx context.Context, stdout io.Writer) error {
	gone, err := snapshot.Prune(ctx, sc.store, sc.proj.Name(), sc.proj.Version(), sc.keep)
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

// row is the snapshot's line in the table 'snapshot list' prints.
func (m listedSnapshot) row() string {
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
}

// scrubAdvice says what happens to snapshots that may hold forgotten subjects' data.
func (s *service) scrubAdvice(n int, dir string) string {
	return fmt.Sprintf("%d snapshot(s) in %s may still hold data of forgotten subjects: a running '%s run --snapshot-dir %s'\n"+
		"rewrites them without it (at start, after applying a SubjectForgotten, and every --scrub-every); '%s snapshot scrub' does it now.", n, dir, s.name, dir, s.name)
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
	if err := cli.Positive("--scrub-every (PROJECTOR_SCRUB_EVERY)", s.scrubEvery); err != nil {
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
