package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/snapshot"
)

// snapshotMade is the bootstrap's snapshot: taken at 90% of the log, in a folder
// of its own, removed when the run ends.
type snapshotMade struct {
	dir      string
	manifest *snapshot.Manifest
}

// startSnapshot makes the bootstrap's snapshot in the background, when the
// bootstrap is to run, and returns the function that waits for it. The replay's
// check runs meanwhile: neither is timed, and the bench saves the shorter one's time.
func (e *env) startSnapshot(ctx context.Context) (wait func() error) {
	if !e.c.wants("bootstrap") {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		start := time.Now()
		snap, err := e.takeSnapshot(ctx)
		if err == nil {
			e.snap = snap
			e.mark("bootstrap: replay to 90% and take the snapshot (beside the replay's check)", start)
		}
		done <- err
	}()
	return func() error { return <-done }
}

// takeSnapshot replays the first 90% of each partition into a fresh database and
// takes a snapshot of it into a new folder.
func (e *env) takeSnapshot(ctx context.Context) (*snapshotMade, error) {
	at := map[int]int64{}
	for part, end := range e.ends {
		at[part] = end * 9 / 10
	}
	src, err := e.database(ctx, "snapsrc")
	if err != nil {
		return nil, err
	}
	defer e.drop(ctx, src) // the snapshot is all the bootstrap needs of it
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return nil, err
	}
	cfg := e.runnerConfig(src, p)
	cfg.StopAt = at
	if _, err := runUntil(ctx, cfg, at, nil); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "bench-snapshots-")
	if err != nil {
		return nil, err
	}
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: src, Projection: p, Topic: e.topic}, snapshot.FolderStore{Dir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &snapshotMade{dir: dir, manifest: m}, nil
}

// dropSnapshot removes the bootstrap's snapshot folder, if one was made.
func (e *env) dropSnapshot() {
	if e.snap != nil {
		_ = os.RemoveAll(e.snap.dir)
	}
}

// bootstrap: the snapshot at 90% of the log (made beside the replay's check),
// restored into a fresh database, then the catch-up to the end.
func (e *env) bootstrap(ctx context.Context, replaySeconds float64) (Bootstrap, error) {
	var b Bootstrap
	if e.snap == nil {
		return b, fmt.Errorf("no snapshot was made: the replay did not run")
	}
	m, store := e.snap.manifest, snapshot.FolderStore{Dir: e.snap.dir}
	b.SnapshotEvents, b.SnapshotBytes = m.Events, m.Bytes
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return b, err
	}
	dst, err := e.database(ctx, "bootstrap")
	if err != nil {
		return b, err
	}
	defer e.drop(ctx, dst)
	r, err := projector.New(e.runnerConfig(dst, p))
	if err != nil {
		return b, err
	}
	if err := r.Setup(ctx); err != nil {
		return b, err
	}
	// The restore and the catch-up run under the service's memory limit, as the
	// replay runs they are set against do.
	if _, err := cli.ApplyMemoryLimit(e.c.memoryLimit, "", "--memory-limit", ""); err != nil {
		return b, err
	}
	defer debug.SetMemoryLimit(math.MaxInt64)
	runtime.GC()
	restore := startStopwatch()
	if _, err := snapshot.Restore(ctx, store, m.ID, snapshot.Target{Pool: dst, Projection: p, Topic: e.topic}); err != nil {
		return b, err
	}
	restored := restore.stop()
	b.RestoreSeconds, b.RestoreBusyCores = restored.took.Seconds(), restored.busy
	catch, err := runUntil(ctx, e.runnerConfig(dst, p), e.ends, nil)
	if err != nil {
		return b, err
	}
	b.CatchUpSeconds, b.CatchUpBusyCores = catch.took.Seconds(), catch.busy
	b.Seconds = b.RestoreSeconds + b.CatchUpSeconds
	b.RatioToReplay = b.Seconds / replaySeconds
	debug.SetMemoryLimit(math.MaxInt64)
	if err := e.checkBootstrap(ctx, dst); err != nil {
		return b, err
	}
	b.Verified = true
	logf("bootstrap: restore %.1f s + catch-up %.1f s; machine busy %.2f and %.2f cores", b.RestoreSeconds, b.CatchUpSeconds, b.RestoreBusyCores, b.CatchUpBusyCores)
	return b, nil
}

// checkBootstrap checks the read model in dst against the fold of the log: by its
// checksum against the replay's (whose read model equals the fold), and when they
// differ, by folding the log again to name the difference.
func (e *env) checkBootstrap(ctx context.Context, dst *pgxpool.Pool) error {
	sum, err := readModelSum(ctx, dst)
	if err != nil {
		return err
	}
	if e.foldSum == "" {
		return errors.New("no checksum of the fold: the replay was not checked")
	}
	if sum == e.foldSum {
		return nil
	}
	want, err := e.logFold(ctx)
	if err != nil {
		return err
	}
	got, err := domain.Load(ctx, dst, "users_v1")
	if err != nil {
		return err
	}
	d := domain.Diff(want, got, 3)
	if d == "" {
		d = "the fold's comparison names no difference: a column it does not compare differs"
	}
	return fmt.Errorf("bootstrap-then-catch-up (checksum %s) differs from the replay's, which equals the fold (%s): %s", sum, e.foldSum, d)
}
