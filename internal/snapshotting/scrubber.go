package snapshotting

import (
	"context"
	"errors"
	"iter"
	"reflect"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/snapshot"
)

// Scrubber keeps the runner's snapshot stores free of forgotten subjects' data,
// whoever wrote the snapshots: it rewrites every snapshot that may hold some
// (forget.ScrubSnapshots) at start, within half a second of this runner applying a
// SubjectForgotten, and every ScrubEvery otherwise — which catches a snapshot
// written meanwhile by another process and a forgetting another instance applied.
type Scrubber struct {
	src    Source
	every  time.Duration // how often the stores are checked besides
	stores []snapshot.Store
	due    atomic.Bool // a SubjectForgotten applied: look now
}

// NewScrubber returns the scrubber of store and of the policy's store, checked
// every so often; nil without Source.Keys or without a store.
func NewScrubber(src Source, store snapshot.Store, policy *Policy, every time.Duration) *Scrubber {
	if src.Keys == nil {
		return nil // no key store: nothing was ever forgotten here, nothing to purge
	}
	var stores []snapshot.Store
	for _, st := range []snapshot.Store{store, policyStore(policy)} {
		if st != nil && !containsStore(stores, st) {
			stores = append(stores, st)
		}
	}
	if len(stores) == 0 {
		return nil
	}
	// The first pass is at start: snapshots may predate forgettings this process
	// never read.
	return &Scrubber{src: src, every: every, stores: stores}
}

func policyStore(p *Policy) snapshot.Store {
	if p == nil {
		return nil
	}
	return p.Store
}

// containsStore compares stores as values where their type allows it (a folder
// store is its folder).
func containsStore(stores []snapshot.Store, st snapshot.Store) bool {
	for _, have := range stores {
		if reflect.TypeOf(have) == reflect.TypeOf(st) && reflect.TypeOf(st).Comparable() && have == st {
			return true
		}
	}
	return false
}

// Arm asks for a pass now: a SubjectForgotten was applied (or is being retried).
func (s *Scrubber) Arm() { s.due.Store(true) }

// Saw arms a pass when a batch applied a SubjectForgotten, given the types it applied.
func (s *Scrubber) Saw(applied iter.Seq[string]) {
	for t := range applied {
		if t == shred.TypeSubjectForgotten {
			s.due.Store(true)
			return
		}
	}
}

// Loop runs for the whole of Run, whether or not this instance owns partitions:
// every instance keeps the stores clean, the locks in forget.ScrubSnapshots let one at a
// time rewrite. While another instance holds the lock it looks again every tick;
// after a failure (the database down, say) it backs off up to ScrubEvery.
func (s *Scrubber) Loop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	next, failures := time.Now(), 0
	for {
		if s.due.Swap(false) || !time.Now().Before(next) {
			busy, err := s.pass(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				failures++
				next = time.Now().Add(min(s.every, time.Second<<min(failures, 10)))
				if failures == 1 {
					s.src.Log.Warn("rewriting snapshots that may hold forgotten subjects' data failed; will retry", zap.Error(err))
				}
			case busy:
				next = time.Now() // the holder may have started before the latest forgetting
				s.src.Log.Debug("another instance is rewriting the snapshots; will look again")
			default:
				if failures > 0 {
					s.src.Log.Info("rewriting snapshots works again", zap.Int("failures", failures))
				}
				next, failures = time.Now().Add(s.every), 0
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pass rewrites what needs it in every store.
func (s *Scrubber) pass(ctx context.Context) (busy bool, err error) {
	s.src.Mu.Lock()
	defer s.src.Mu.Unlock()
	var errs []error
	for _, st := range s.stores {
		_, err := forget.ScrubSnapshots(ctx, forget.Scrub{Pool: s.src.Pool, Store: st, Projection: s.src.Projection,
			Topic: s.src.Topic, Keys: s.src.Keys, Logger: s.src.Log})
		if errors.Is(err, forget.ErrScrubBusy) {
			busy = true
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	return busy, errors.Join(errs...)
}
