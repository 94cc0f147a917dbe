package snapshot_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/projector"
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

// heedingStore is a FolderStore whose List and Delete heed their context, as a
// store over a network would, and whose first Write ends the run (stop).
type heedingStore struct {
	snapshot.FolderStore
	stop  context.CancelFunc
	wrote *atomic.Bool
}

func (s heedingStore) Write(ctx context.Context, m *snapshot.Manifest, files func(put func(string, func(io.Writer) error) error) error) error {
	err := s.FolderStore.Write(ctx, m, files)
	if err == nil && s.wrote.CompareAndSwap(false, true) {
		s.stop()
	}
	return err
}

func (s heedingStore) List(ctx context.Context, projection string, version int) ([]snapshot.Manifest, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.FolderStore.List(ctx, projection, version)
}

func (s heedingStore) Delete(ctx context.Context, projection string, version int, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.FolderStore.Delete(ctx, projection, version, id)
}

// A snapshot the policy stores is followed by its prune even when the run stops
// right after the store's write: the store keeps Keep snapshots, not one more.
func TestThePolicyPrunesAfterASnapshotStoredAsTheRunStops(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	w := newWorld(t, 2)
	db, _ := testenv.Database(t)
	p := w.projection(1)
	w.publish(2000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := heedingStore{FolderStore: snapshot.FolderStore{Dir: t.TempDir()}, stop: cancel, wrote: &atomic.Bool{}}
	old := &snapshot.Manifest{ID: "old", Projection: p.Name(), Version: p.Version(), CreatedAt: time.Now().Add(-time.Hour)}
	if err := store.FolderStore.Write(context.Background(), old, func(func(string, func(io.Writer) error) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	r, err := projector.New(projector.Config{Brokers: testenv.Kafka(t), Topic: w.topic, Projection: p, Pool: db,
		GroupID: "g-" + w.name, Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, BatchSize: 200,
		Snapshots: &projector.SnapshotPolicy{Store: store, EveryEvents: 500, Keep: 1}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no snapshot stored within 2 minutes")
	}
	ms, err := store.FolderStore.List(context.Background(), p.Name(), p.Version())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	if len(ms) != 1 || ms[0].ID == "old" {
		t.Fatalf("the store keeps %d snapshots %v, want the new one alone (Keep 1)", len(ms), ids)
	}
}
