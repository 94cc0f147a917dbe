package projector

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/snapshot"
)

// scrubber keeps the runner's snapshot stores free of forgotten subjects' data,
// whoever wrote the snapshots: it rewrites every snapshot that may hold some
// (forget.ScrubSnapshots) at start, within half a second of this runner applying a
// SubjectForgotten, and every ScrubEvery otherwise — which catches a snapshot
// written meanwhile by another process and a forgetting another instance applied.
type scrubber struct {
	r        *Runner
	stores   []snapshot.Store
	due      atomic.Bool  // a SubjectForgotten applied: look now
	scrubbed atomic.Int64 // snapshots rewritten
}

func newScrubber(r *Runner) *scrubber {
	if r.cfg.Keys == nil {
		return nil // no key store: nothing was ever forgotten here, nothing to purge
	}
	var stores []snapshot.Store
	for _, st := range []snapshot.Store{r.cfg.ScrubStore, policyStore(r.cfg.Snapshots)} {
		if st != nil && !containsStore(stores, st) {
			stores = append(stores, st)
		}
	}
	if len(stores) == 0 {
		return nil
	}
	// The first pass is at start: snapshots may predate forgettings this process
	// never read.
	return &scrubber{r: r, stores: stores}
}

func policyStore(p *SnapshotPolicy) snapshot.Store {
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

// SnapshotsScrubbed returns the number of snapshots this runner rewrote after
// subjects were forgotten.
func (r *Runner) SnapshotsScrubbed() int64 {
	if r.scrubs == nil {
		return 0
	}
	return r.scrubs.scrubbed.Load()
}

// saw arms a pass when a batch applied a SubjectForgotten.
func (s *scrubber) saw(entries []entry) {
	for i := range entries {
		if entries[i].act == actApply && entries[i].ev.Type == shred.TypeSubjectForgotten {
			s.due.Store(true)
			return
		}
	}
}

// loop runs for the whole of Run, whether or not this instance owns partitions:
// every instance keeps the stores clean, the locks in forget.ScrubSnapshots let one at a
// time rewrite. While another instance holds the lock it looks again every tick;
// after a failure (the database down, say) it backs off up to ScrubEvery.
func (s *scrubber) loop(ctx context.Context) {
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
				next = time.Now().Add(min(s.r.cfg.ScrubEvery, time.Second<<min(failures, 10)))
				if failures == 1 {
					s.r.log.Warn("rewriting snapshots that may hold forgotten subjects' data failed; will retry", zap.Error(err))
				}
			case busy:
				next = time.Now() // the holder may have started before the latest forgetting
				s.r.log.Debug("another instance is rewriting the snapshots; will look again")
			default:
				if failures > 0 {
					s.r.log.Info("rewriting snapshots works again", zap.Int("failures", failures))
				}
				next, failures = time.Now().Add(s.r.cfg.ScrubEvery), 0
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
func (s *scrubber) pass(ctx context.Context) (busy bool, err error) {
	s.r.storeMu.Lock()
	defer s.r.storeMu.Unlock()
	var errs []error
	for _, st := range s.stores {
		done, err := forget.ScrubSnapshots(ctx, forget.Scrub{Pool: s.r.cfg.Pool, Store: st, Projection: s.r.cfg.Projection,
			Topic: s.r.cfg.Topic, Keys: s.r.cfg.Keys, Logger: s.r.log})
		s.scrubbed.Add(int64(len(done)))
		if errors.Is(err, forget.ErrScrubBusy) {
			busy = true
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	return busy, errors.Join(errs...)
}
