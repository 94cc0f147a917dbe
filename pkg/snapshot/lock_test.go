//go:build unix

package snapshot_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/projector/projector/pkg/snapshot"
)

// A folder's rewriter and its readers take turns, across processes (flock: two
// opens of the lock file conflict as two processes would).
func TestFolderLockKeepsARewriterAndReadersApart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := snapshot.FolderStore{Dir: t.TempDir()}
	r1, err := store.RLock(ctx, "p", 1)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := store.RLock(ctx, "p", 1) // readers share
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.TryLock(ctx, "p", 1); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("rewrite while two read: %v, want ErrLocked", err)
	}
	other, err := store.TryLock(ctx, "p", 2) // another version is another lock
	if err != nil {
		t.Fatal(err)
	}
	other()
	r1()
	r2()
	w, err := store.TryLock(ctx, "p", 1)
	if err != nil {
		t.Fatalf("rewrite with no reader: %v", err)
	}
	if _, err := store.TryLock(ctx, "p", 1); !errors.Is(err, snapshot.ErrLocked) {
		t.Fatalf("a second rewriter: %v, want ErrLocked", err)
	}
	wait, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := store.RLock(wait, "p", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a reader during a rewrite: %v, want it to wait until its context ends", err)
	}
	got := make(chan error, 1)
	go func() {
		unlock, err := store.RLock(ctx, "p", 1)
		if err == nil {
			unlock()
		}
		got <- err
	}()
	w()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting reader did not get the lock once the rewrite ended")
	}
	if ms, err := store.List(ctx, "p", 1); err != nil || len(ms) != 0 {
		t.Fatalf("the lock file is listed as a snapshot: %v %v", ms, err)
	}
}
