package snapshot_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/snapshot"
)

type world struct {
	t     *testing.T
	topic string
	name  string // projection name, the same in every database
	gen   *domain.Generator
	pub   *eventlog.Publisher
}

func newWorld(t *testing.T, partitions int) *world {
	t.Helper()
	var b [5]byte
	_, _ = rand.Read(b[:])
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 8, Users: 800})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, topic: testenv.Topic(t, partitions), name: "s" + hex.EncodeToString(b[:]), gen: g}
	w.pub, err = eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: w.topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.pub.Close() })
	return w
}

func (w *world) publish(n int) {
	w.t.Helper()
	evs := make([]events.Event, 0, 5000)
	for i := 0; i < n; i++ {
		evs = append(evs, w.gen.Next())
		if len(evs) == cap(evs) || i == n-1 {
			if _, err := w.pub.Publish(context.Background(), evs...); err != nil {
				w.t.Fatal(err)
			}
			evs = evs[:0]
		}
	}
}

func (w *world) projection(version int, extra ...string) *readmodel.Projection {
	w.t.Helper()
	p, err := domain.NewProjection(w.name, version)
	if err != nil {
		w.t.Fatal(err)
	}
	p.Migrate(extra...)
	return p
}

func (w *world) runner(pool *pgxpool.Pool, p *readmodel.Projection) *projector.Runner {
	w.t.Helper()
	r, err := projector.New(projector.Config{Brokers: testenv.Kafka(w.t), Topic: w.topic, Projection: p, Pool: pool,
		GroupID: "g-" + w.name + "-" + testenv.UniqueName(w.t), Logger: zaptest.NewLogger(w.t, zaptest.Level(zap.WarnLevel)),
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := r.Setup(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// runUntilCaughtUp runs r until the stored offsets reach the log's end.
func (w *world) runUntilCaughtUp(r *projector.Runner, pool *pgxpool.Pool, p *readmodel.Projection) time.Duration {
	w.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	kc := eventlog.NewClient(testenv.Kafka(w.t))
	defer kc.Close()
	var st projector.Status
	var err error
	defer func() {
		if w.t.Failed() {
			w.t.Logf("last status: %+v, error: %v", st, err)
		}
	}()
	testenv.WaitFor(w.t, 3*time.Minute, "the replay to catch up", func() bool {
		st, err = admin.Inspect(context.Background(), admin.Inspection{Pool: pool, Client: kc,
			Topic: w.topic, Projection: p.Name(), Version: p.Version(), ReadyLag: -1})
		return err == nil && st.Lag == 0 && allStarted(st)
	})
	took := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		w.t.Fatalf("Run: %v", err)
	}
	return took
}

func allStarted(st projector.Status) bool {
	for _, p := range st.Partitions {
		if p.State == "not started" {
			return false
		}
	}
	return true
}

func (w *world) fold(upTo map[int]int64) domain.State {
	w.t.Helper()
	var evs []events.Event
	for _, m := range testenv.ReadAll(w.t, w.topic) {
		if upTo != nil && m.Offset >= upTo[m.Partition] {
			continue
		}
		e, err := eventlog.FromMessage(m)
		if err != nil {
			w.t.Fatal(err)
		}
		evs = append(evs, e)
	}
	s, err := domain.Fold(domain.Registry(), evs)
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// replayed replays w's log into a new database's p and returns the database.
func (w *world) replayed(p *readmodel.Projection) *pgxpool.Pool {
	w.t.Helper()
	db, _ := testenv.Database(w.t)
	w.runUntilCaughtUp(w.runner(db, p), db, p)
	return db
}

// restored restores snapshot id of store into a new database's p and returns the
// database; before, given, runs on the database once it is set up.
func (w *world) restored(store snapshot.Store, id string, p *readmodel.Projection, before ...func(*pgxpool.Pool)) *pgxpool.Pool {
	w.t.Helper()
	db, _ := testenv.Database(w.t)
	require.NoError(w.t, w.runner(db, p).Setup(context.Background()))
	for _, fn := range before {
		fn(db)
	}
	_, err := snapshot.Restore(context.Background(), store, id, snapshot.Target{Pool: db, Projection: p, Topic: w.topic})
	require.NoError(w.t, err)
	return db
}

func load(t *testing.T, pool *pgxpool.Pool, p *readmodel.Projection) domain.State {
	t.Helper()
	s, err := domain.Load(context.Background(), pool, p.Schema())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBootstrapFromSnapshotThenCatchUpEqualsFullReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	w := newWorld(t, 6)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	w.publish(27000)

	// The serving deployment: replays the first 90% and snapshots.
	live, _ := testenv.Database(t)
	p := w.projection(1)
	w.runUntilCaughtUp(w.runner(live, p), live, p)
	m, err := snapshot.Take(context.Background(), snapshot.Source{Pool: live, Projection: p, Topic: w.topic}, store)
	if err != nil {
		t.Fatal(err)
	}
	if m.Events != 27000 {
		t.Fatalf("snapshot covers %d events, want 27000", m.Events)
	}
	w.publish(3000)

	// A new deployment bootstraps from it into its own database, then catches up.
	fresh, _ := testenv.Database(t)
	r := w.runner(fresh, p)
	start := time.Now()
	id, err := snapshot.Latest(context.Background(), store, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Restore(context.Background(), store, id, snapshot.Target{Pool: fresh, Projection: p, Topic: w.topic,
		LogStart: func(ctx context.Context) (map[int]int64, error) {
			return admin.LogStarts(ctx, testenv.Kafka(t), w.topic)
		}}); err != nil {
		t.Fatal(err)
	}
	restored := time.Since(start)
	caughtUp := w.runUntilCaughtUp(r, fresh, p)
	bootstrap := time.Since(start)

	// A third deployment replays everything from zero: the reference.
	full, _ := testenv.Database(t)
	replay := w.runUntilCaughtUp(w.runner(full, p), full, p)

	want := load(t, full, p)
	if d := domain.Diff(want, load(t, fresh, p), 10); d != "" {
		t.Fatalf("bootstrap-then-catch-up differs from a full replay: %s", d)
	}
	if d := domain.Diff(w.fold(nil), want, 10); d != "" {
		t.Fatalf("the full replay differs from the fold: %s", d)
	}
	t.Logf("snapshot of %d events: %d bytes in %d files; restore %v + catch-up of 3000 events %v = %v, against a full replay of 30000 events %v",
		m.Events, m.Bytes, len(m.Tables), restored.Round(time.Millisecond), caughtUp.Round(time.Millisecond),
		bootstrap.Round(time.Millisecond), replay.Round(time.Millisecond))
}

func TestBadSnapshotsAreRefusedSayingWhy(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	w.publish(2000)
	live, _ := testenv.Database(t)
	p := w.projection(1)
	w.runUntilCaughtUp(w.runner(live, p), live, p)
	m, err := snapshot.Take(context.Background(), snapshot.Source{Pool: live, Projection: p, Topic: w.topic}, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var db *pgxpool.Pool // the last restore's target
	restore := func(p *readmodel.Projection, logStart map[int]int64) error {
		db, _ = testenv.Database(t)
		w.runner(db, p) // the framework's tables
		_, err := snapshot.Restore(ctx, store, m.ID, snapshot.Target{Pool: db, Projection: p, Topic: w.topic,
			LogStart: func(ctx context.Context) (map[int]int64, error) {
				if logStart != nil {
					return logStart, nil
				}
				return admin.LogStarts(ctx, testenv.Kafka(t), w.topic)
			}})
		return err
	}
	// A schema that differs: the same projection with one more migration.
	if err := restore(w.projection(1, "CREATE INDEX users_by_email ON users (email)"), nil); !errors.Is(err, snapshot.ErrSchemaMismatch) {
		t.Errorf("schema mismatch: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}
	// Offsets below the log start: records deleted from the real broker.
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Kafka(t)...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var del kadm.Offsets
	for part, next := range m.Offsets {
		if next > 10 {
			del.AddOffset(w.topic, int32(part), next-5, -1)
		}
	}
	if _, err := kadm.NewClient(cl).DeleteRecords(ctx, del); err != nil {
		t.Fatal(err)
	}
	w.publish(10) // nothing is restored past the start, but the log moved on
	if err := restore(p, nil); err != nil {
		t.Fatalf("a snapshot 5 events behind a moved log start must still restore: %v", err)
	}
	for part, next := range m.Offsets {
		if next > 10 {
			del.AddOffset(w.topic, int32(part), next+5, -1)
		}
	}
	if _, err := kadm.NewClient(cl).DeleteRecords(ctx, del); err != nil {
		t.Fatal(err)
	}
	if err := restore(p, nil); !errors.Is(err, snapshot.ErrBelowLogStart) {
		t.Errorf("offsets below the log start: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}
	// Corrupt: one byte of one table flipped.
	file := filepath.Join(store.Dir, p.Name()+"_v1", m.ID, "users.copy")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	err = restore(p, map[int]int64{})
	if !errors.Is(err, snapshot.ErrChecksum) || !strings.Contains(err.Error(), "users") {
		t.Errorf("corrupt snapshot: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}
	// The files are checked as they are copied: the refused restore left nothing.
	for _, q := range []string{`SELECT count(*) FROM ` + pgx.Identifier{p.Schema(), "users"}.Sanitize(),
		`SELECT count(*) FROM ` + pgx.Identifier{p.Schema(), "articles"}.Sanitize(),
		`SELECT count(*) FROM ` + readmodel.FrameworkSchemaDefault + `.offsets WHERE projection = '` + p.Name() + `'`,
		`SELECT count(*) FROM ` + readmodel.FrameworkSchemaDefault + `.aggregates WHERE projection = '` + p.Name() + `'`} {
		var n int
		require.NoError(t, db.QueryRow(ctx, q).Scan(&n))
		require.Zero(t, n, "after the refused restore: %s", q)
	}
}

// Snapshots taken by policy while events flow — async every N events, and sync on a
// chosen event type — are each consistent: restored, each equals the fold of the log
// up to its own offsets.
func TestPolicySnapshotsTakenWhileEventsFlowAreConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	for _, sync := range []bool{false, true} {
		w := newWorld(t, 4)
		store := snapshot.FolderStore{Dir: t.TempDir()}
		w.publish(4000)
		db, _ := testenv.Database(t)
		p := w.projection(1)
		policy := &projector.SnapshotPolicy{Store: store, EveryEvents: 3000, Keep: 10}
		if sync {
			policy = &projector.SnapshotPolicy{Store: store, OnTypes: []string{domain.TypeUserDeleted}, Sync: true, Keep: 4}
		}
		r, err := projector.New(projector.Config{Brokers: testenv.Kafka(t), Topic: w.topic, Projection: p, Pool: db,
			GroupID: "g-" + w.name, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
			SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, BatchSize: 200, Snapshots: policy})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		for range 4 { // events keep arriving while snapshots are taken
			w.publish(3000)
			time.Sleep(300 * time.Millisecond)
		}
		testenv.WaitFor(t, 2*time.Minute, fmt.Sprintf("sync=%v: three snapshots", sync), func() bool {
			ms, _ := store.List(context.Background(), p.Name(), p.Version())
			return len(ms) >= 3
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		ms, err := store.List(context.Background(), p.Name(), p.Version())
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) > policy.Keep {
			t.Fatalf("%d snapshots kept, policy keeps %d", len(ms), policy.Keep)
		}
		for _, m := range ms {
			fresh, _ := testenv.Database(t)
			w.runner(fresh, p)
			if _, err := snapshot.Restore(context.Background(), store, m.ID, snapshot.Target{Pool: fresh, Projection: p, Topic: w.topic}); err != nil {
				t.Fatal(err)
			}
			if d := domain.Diff(w.fold(m.Offsets), load(t, fresh, p), 10); d != "" {
				t.Fatalf("sync=%v: snapshot %s (%d events) differs from the fold up to its offsets: %s", sync, m.ID, m.Events, d)
			}
		}
		t.Logf("sync=%v: %d snapshots, each equal to the fold up to its offsets", sync, len(ms))
	}
}

// Open parked events travel with a snapshot: the restored read model keeps the
// aggregate parked (later events park behind it, as in a full replay) and lists them.
func TestSnapshotCarriesParkedEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	w.publish(500)
	// An undecodable event for one user, then a good one behind it.
	bad := events.Event{ID: "bad-1", Source: "t", Type: domain.TypeUserChangedPassword, Subject: "poisoned-user", Sequence: 1,
		Data: []byte(`{"user_id": 7}`)} // user_id must be a string
	good := events.Event{ID: "good-2", Source: "t", Type: domain.TypeUserChangedPassword, Subject: "poisoned-user", Sequence: 2,
		Data: []byte(`{"user_id": "poisoned-user"}`)}
	if _, err := w.pub.Publish(context.Background(), bad, good); err != nil {
		t.Fatal(err)
	}
	live, _ := testenv.Database(t)
	p := w.projection(1)
	w.runUntilCaughtUp(w.runner(live, p), live, p)
	m, err := snapshot.Take(context.Background(), snapshot.Source{Pool: live, Projection: p, Topic: w.topic}, store)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := testenv.Database(t)
	r := w.runner(fresh, p)
	if _, err := snapshot.Restore(context.Background(), store, m.ID, snapshot.Target{Pool: fresh, Projection: p, Topic: w.topic}); err != nil {
		t.Fatal(err)
	}
	third := events.Event{ID: "good-3", Source: "t", Type: domain.TypeUserChangedPassword, Subject: "poisoned-user", Sequence: 3,
		Data: []byte(`{"user_id": "poisoned-user"}`)}
	if _, err := w.pub.Publish(context.Background(), third); err != nil {
		t.Fatal(err)
	}
	w.runUntilCaughtUp(r, fresh, p)
	parked, err := admin.NewDLQ(fresh, "", p.Name(), p.Version()).List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 3 || parked[0].EventID != "bad-1" || parked[2].EventID != "good-3" {
		t.Fatalf("restored deployment's parked events: %+v, want bad-1, good-2 and the new good-3 behind them", parked)
	}
}

// TestRestoreCopiesFrozenOrFallsBackWhenATableCannotBeTruncated: a restore truncates
// the (empty) tables it fills in one statement, so that COPY may write the rows
// frozen; tables with foreign keys between them restore so. A table another schema
// references cannot be truncated alone: the restore then copies without FREEZE.
// Either way the read model restored equals the one snapshotted.
func TestRestoreCopiesFrozenOrFallsBackWhenATableCannotBeTruncated(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	w.publish(3000)
	ctx := context.Background()
	src, _ := testenv.Database(t)
	p := w.projection(1, `CREATE TABLE tags (tag text PRIMARY KEY)`,
		`CREATE TABLE tagged (tag text NOT NULL REFERENCES tags (tag), user_id text NOT NULL)`)
	w.runUntilCaughtUp(w.runner(src, p), src, p)
	_, err := src.Exec(ctx, `INSERT INTO `+pgx.Identifier{p.Schema(), "tags"}.Sanitize()+` VALUES ('a'), ('b');
		INSERT INTO `+pgx.Identifier{p.Schema(), "tagged"}.Sanitize()+` VALUES ('a', 'u1'), ('b', 'u2')`)
	require.NoError(t, err)
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: src, Projection: p, Topic: w.topic}, store)
	require.NoError(t, err)
	want := load(t, src, p)

	for _, referenced := range []bool{false, true} {
		dst, _ := testenv.Database(t)
		require.NoError(t, w.runner(dst, p).Setup(ctx))
		if referenced {
			_, err := dst.Exec(ctx, `CREATE SCHEMA elsewhere; CREATE TABLE elsewhere.pins (user_id text REFERENCES `+
				pgx.Identifier{p.Schema(), "users"}.Sanitize()+` (user_id))`)
			require.NoError(t, err)
		}
		_, err := snapshot.Restore(ctx, store, m.ID, snapshot.Target{Pool: dst, Projection: p, Topic: w.topic})
		require.NoError(t, err, "referenced from another schema: %v", referenced)
		if d := domain.Diff(want, load(t, dst, p), 10); d != "" {
			t.Fatalf("restored (referenced %v) differs from the snapshotted read model: %s", referenced, d)
		}
		var tagged int
		require.NoError(t, dst.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{p.Schema(), "tagged"}.Sanitize()).Scan(&tagged))
		require.Equal(t, 2, tagged)
	}
}

// TestRestoreBuildsTheIndexesItDroppedForTheCopy: a restore drops the indexes a
// table's COPY would update row by row and builds them again once the rows are in
// (see dropIndexes). Every index and constraint comes back as it was defined, and
// enforces again; an index a foreign key uses stays in place throughout.
func TestRestoreBuildsTheIndexesItDroppedForTheCopy(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	w.publish(2000)
	ctx := context.Background()
	p := w.projection(1, `CREATE TABLE tags (tag text PRIMARY KEY, label text NOT NULL, CONSTRAINT tags_label UNIQUE (label))`,
		`CREATE TABLE tagged (tag text NOT NULL REFERENCES tags (tag), user_id text NOT NULL, weight int NOT NULL)`,
		`CREATE INDEX tagged_heavy ON tagged (user_id, (weight * 2)) WHERE weight > 1`)
	src := w.replayed(p)
	tbl := func(name string) string { return pgx.Identifier{p.Schema(), name}.Sanitize() }
	_, err := src.Exec(ctx, `INSERT INTO `+tbl("tags")+` VALUES ('a', 'A'), ('b', 'B');
		INSERT INTO `+tbl("tagged")+` VALUES ('a', 'u1', 1), ('b', 'u2', 3)`)
	require.NoError(t, err)
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: src, Projection: p, Topic: w.topic}, store)
	require.NoError(t, err)

	// What the schema's indexes and constraints are, by name, and each index's oid.
	catalog := func(pool *pgxpool.Pool) (defs map[string]string, oids map[string]uint32) {
		defs, oids = map[string]string{}, map[string]uint32{}
		rows, err := pool.Query(ctx, `SELECT c.relname, c.oid, pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' (invalid)' END
			  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1`, p.Schema())
		require.NoError(t, err)
		for rows.Next() {
			var name, def string
			var oid uint32
			require.NoError(t, rows.Scan(&name, &oid, &def))
			defs["index "+name], oids[name] = def, oid
		}
		require.NoError(t, rows.Err())
		rows, err = pool.Query(ctx, `SELECT k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k
			  JOIN pg_namespace n ON n.oid = k.connamespace WHERE n.nspname = $1`, p.Schema())
		require.NoError(t, err)
		for rows.Next() {
			var name, def string
			require.NoError(t, rows.Scan(&name, &def))
			defs["constraint "+name] = def
		}
		require.NoError(t, rows.Err())
		return defs, oids
	}
	want, _ := catalog(src)
	require.Contains(t, want, "index articles_by_user")
	require.Contains(t, want, "index tagged_heavy")

	dst, _ := testenv.Database(t)
	require.NoError(t, w.runner(dst, p).Setup(ctx))
	_, before := catalog(dst) // the tables as the migrations made them, before the restore
	_, err = snapshot.Restore(ctx, store, m.ID, snapshot.Target{Pool: dst, Projection: p, Topic: w.topic})
	require.NoError(t, err)
	got, after := catalog(dst)
	require.Equal(t, want, got, "the restored schema's indexes and constraints")
	if d := domain.Diff(load(t, src, p), load(t, dst, p), 10); d != "" {
		t.Fatalf("restored differs from the snapshotted read model: %s", d)
	}
	// Built again: the copy's tables' indexes are new ones. Kept: tags_pkey, which
	// tagged's foreign key uses.
	for _, name := range []string{"users_pkey", "articles_pkey", "articles_by_user", "tags_label", "tagged_heavy"} {
		require.NotEqual(t, before[name], after[name], "index %s: dropped for the COPY and built again", name)
	}
	require.Equal(t, before["tags_pkey"], after["tags_pkey"], "tags_pkey, which a foreign key uses, stays")
	// And they enforce again.
	_, err = dst.Exec(ctx, `INSERT INTO `+tbl("tags")+` VALUES ('c', 'A')`)
	require.ErrorContains(t, err, "tags_label")
	var one string
	require.NoError(t, dst.QueryRow(ctx, `SELECT user_id FROM `+tbl("users")+` LIMIT 1`).Scan(&one))
	_, err = dst.Exec(ctx, `INSERT INTO `+tbl("users")+` (user_id, email, name, registered_at) VALUES ($1, 'e', 'n', now())`, one)
	require.ErrorContains(t, err, "users_pkey")
}

// TestRestoreBringsBackEveryMarkWithItsWindow: the marks (each aggregate's sequence)
// and their dedupe windows travel in two files and are written by one INSERT that
// joins them; the restored framework rows equal the snapshotted ones, window and
// all, so that a late copy of a recent event is still recognised after a restore. A
// snapshot from before the windows (no window file) restores its marks with the
// column's empty window, as a restore did then.
func TestRestoreBringsBackEveryMarkWithItsWindow(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	w.publish(3000)
	ctx := context.Background()
	p := w.projection(1)
	src := w.replayed(p)
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: src, Projection: p, Topic: w.topic}, store)
	require.NoError(t, err)
	marks := func(pool *pgxpool.Pool) []string {
		rows, err := pool.Query(ctx, `SELECT subject || ' ' || last_sequence || ' ' || last_event_id || ' ' || coalesce(encode(recent, 'hex'), 'NULL')
			FROM `+readmodel.FrameworkSchemaDefault+`.aggregates WHERE projection = $1 AND version = 1 ORDER BY subject`, w.name)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	want := marks(src)
	require.NotEmpty(t, want)
	var windowless []string // the same marks, each with the empty window
	for _, mk := range want {
		require.NotRegexp(t, ` (NULL)?$`, mk, "every mark the runner wrote has a window")
		windowless = append(windowless, mk[:strings.LastIndex(mk, " ")+1])
	}
	require.Equal(t, want, marks(w.restored(store, m.ID, p)))

	// Marks of the projection version already there (stale, without positions) are
	// overwritten by the snapshot's.
	staleMarks := func(db *pgxpool.Pool) {
		subjects := []string{strings.Fields(want[0])[0], strings.Fields(want[len(want)-1])[0]}
		_, err := db.Exec(ctx, `INSERT INTO `+readmodel.FrameworkSchemaDefault+`.aggregates (projection, version, subject, last_sequence, last_event_id, recent)
			SELECT $1, 1, s, 999, 'stale', '\xff' FROM unnest($2::text[]) AS s`, w.name, subjects)
		require.NoError(t, err)
	}
	require.Equal(t, want, marks(w.restored(store, m.ID, p, staleMarks)))

	// The same snapshot as taken before the windows existed: no _recent file.
	dir := filepath.Join(store.Dir, p.Name()+"_v1", m.ID)
	require.NoError(t, os.Remove(filepath.Join(dir, "_recent.copy")))
	m.Tables = slices.DeleteFunc(m.Tables, func(t snapshot.Table) bool { return t.Name == "_recent" })
	m.Checksum = snapshot.Checksum(m.Tables)
	b, err := json.MarshalIndent(m, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644))
	require.Equal(t, windowless, marks(w.restored(store, m.ID, p)))
}
