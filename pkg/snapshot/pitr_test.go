package snapshot_test

import (
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/snapshot"
)

// A point-in-time replay — from the newest snapshot before the point, then the log up
// to it — equals the fold of the events before the point, beside the live read model.
func TestPointInTimeReplayEqualsFoldUpToThePoint(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	w := newWorld(t, 4)
	store := snapshot.FolderStore{Dir: t.TempDir()}
	db, _ := testenv.Database(t)
	p := w.projection(1)

	w.publish(6000)
	w.runUntilCaughtUp(w.runner(db, p), db, p)
	early, err := snapshot.Take(context.Background(), snapshot.Source{Pool: db, Projection: p, Topic: w.topic}, store)
	if err != nil {
		t.Fatal(err)
	}
	w.publish(3000)
	time.Sleep(1100 * time.Millisecond) // Kafka timestamps are milliseconds: keep the point clear of both sides
	point := time.Now()
	time.Sleep(1100 * time.Millisecond)
	w.publish(3000)
	w.runUntilCaughtUp(w.runner(db, p), db, p)
	if _, err := snapshot.Take(context.Background(), snapshot.Source{Pool: db, Projection: p, Topic: w.topic}, store); err != nil {
		t.Fatal(err) // a later snapshot, past the point: it must not be used
	}

	res, err := admin.ReplayUntil(context.Background(), admin.PointInTime{Pool: db, Brokers: testenv.Kafka(t), Topic: w.topic,
		Projection: p, Into: "pitr_" + w.name, UntilTime: point, Store: store, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot != early.ID || res.Events != 9000 || res.Replayed != 3000 {
		t.Fatalf("replay %+v: want from snapshot %s, 9000 events, 3000 replayed", res, early.ID)
	}
	got, err := domain.Load(context.Background(), db, "pitr_"+w.name)
	if err != nil {
		t.Fatal(err)
	}
	if d := domain.Diff(w.fold(res.Until), got, 10); d != "" {
		t.Fatalf("the read model at the point differs from the fold up to it: %s", d)
	}
	// The live read model is untouched and ahead.
	if d := domain.Diff(w.fold(nil), load(t, db, p), 10); d != "" {
		t.Fatalf("the live read model changed: %s", d)
	}
	t.Logf("point in time: %d events (snapshot %s + %d replayed) into schema pitr_%s, beside the live read model", res.Events, res.Snapshot, res.Replayed, w.name)
}

// cancelAfterWrite is a store that ends its caller's context once a snapshot is
// stored: a run stopping at that moment.
type cancelAfterWrite struct {
	snapshot.FolderStore
	cancel context.CancelFunc
}

func (s cancelAfterWrite) Write(ctx context.Context, m *snapshot.Manifest, files func(put func(string, func(io.Writer) error) error) error) error {
	err := s.FolderStore.Write(ctx, m, files)
	s.cancel()
	return err
}

// A snapshot stored is a snapshot taken, even if the caller's context ends right
// after: the read-only transaction it was read in has nothing to commit. Reported
// failed, the policy did not prune after it, and the store kept one more than its
// Keep.
func TestASnapshotStoredIsTakenWhenTheContextEndsRightAfter(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	w := newWorld(t, 2)
	db, _ := testenv.Database(t)
	p := w.projection(1)
	w.publish(500)
	w.runUntilCaughtUp(w.runner(db, p), db, p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := cancelAfterWrite{FolderStore: snapshot.FolderStore{Dir: t.TempDir()}, cancel: cancel}
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: db, Projection: p, Topic: w.topic}, store)
	if err != nil || m == nil {
		t.Fatalf("a stored snapshot reported as %v (manifest %v)", err, m)
	}
	ms, err := store.List(context.Background(), p.Name(), p.Version())
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID || m.Events != 500 {
		t.Fatalf("store holds %v (%v), want the one taken, of 500 events: %+v", ms, err, m)
	}
}
