package snapshot

import (
	"context"
	"errors"
	"fmt"
)

// Locker is implemented by a Store that can keep a rewriter and readers of a
// projection version's snapshots apart across processes: a snapshot rewritten
// without a forgotten subject's data (forget.ScrubSnapshots) replaces the old one,
// which is deleted, and a restore must not be reading it then. Two services sharing
// the store, each with a database of its own, take turns through it.
type Locker interface {
	// TryLock takes the lock for rewriting, without waiting: ErrLocked while
	// another process rewrites or reads. The returned function releases it.
	TryLock(ctx context.Context, projection string, version int) (unlock func(), err error)
	// RLock takes the lock for reading, shared with other readers, waiting while a
	// rewrite holds it. The returned function releases it.
	RLock(ctx context.Context, projection string, version int) (unlock func(), err error)
}

// ErrLocked means another process holds the store's lock for the projection version.
var ErrLocked = errors.New("snapshot store is locked by another process")

// rlock takes the store's reading lock when it has one.
func rlock(ctx context.Context, store Store, projection string, version int) (func(), error) {
	l, ok := store.(Locker)
	if !ok {
		return func() {}, nil
	}
	unlock, err := l.RLock(ctx, projection, version)
	if err != nil {
		return nil, fmt.Errorf("snapshot: wait for a rewrite to end: %w", err)
	}
	return unlock, nil
}

// RestoreNewest restores the newest snapshot that pick accepts (nil: any). A
// snapshot rewritten, and so deleted, between the listing and the restore is looked
// for again under its new id. ErrNotFound when none fits.
func RestoreNewest(ctx context.Context, store Store, pick func(Manifest) bool, dst Target) (Manifest, error) {
	p := dst.Projection
	for attempt := 0; ; attempt++ {
		ms, err := store.List(ctx, p.Name(), p.Version())
		if err != nil {
			return Manifest{}, err
		}
		var chosen *Manifest
		for i := range ms { // newest first
			if pick == nil || pick(ms[i]) {
				chosen = &ms[i]
				break
			}
		}
		if chosen == nil {
			return Manifest{}, fmt.Errorf("snapshot: %w for %s_v%d", ErrNotFound, p.Name(), p.Version())
		}
		m, err := Restore(ctx, store, chosen.ID, dst)
		if errors.Is(err, ErrNotFound) && attempt < 5 {
			continue // rewritten meanwhile
		}
		return m, err
	}
}
