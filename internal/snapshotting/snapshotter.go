package snapshotting

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/projector/projector/internal/poll"
	"github.com/projector/projector/pkg/snapshot"
)

// Policy says when the runtime snapshots its projection. Any trigger that
// is set fires a snapshot; the newest Keep are kept.
//
// Synchronous snapshots are taken by the worker that saw the trigger, at its batch
// boundary: that partition waits (the others go on), and the snapshot's offsets for
// that partition are exactly the batch's end. Asynchronous ones are taken beside
// the workers, which never wait. Both are consistent — one REPEATABLE READ
// transaction sees every table and every offset at the same instant — so the choice
// is about latency: sync bounds how far a snapshot trails a chosen event, async
// never slows the stream. Snapshot often enough that a new deployment's catch-up
// after the newest snapshot is short, rarely enough that taking them (a full copy of
// the tables) stays a small part of the database's work.
//
// With Config.Keys, the runner also keeps Store free of forgotten subjects' data
// (see Config.ScrubStore), policy or not.
type Policy struct {
	Store       snapshot.Store
	EveryEvents int64         // after this many events since the last snapshot (0: off)
	Every       time.Duration // at this interval (0: off)
	OnTypes     []string      // when an event of one of these types is applied
	Sync        bool          // taken at a batch boundary by the worker that saw the trigger
	Keep        int           // snapshots to keep (default 3)
}

// Snapshotter takes the snapshots a Policy asks for.
type Snapshotter struct {
	src     Source
	policy  Policy
	last    atomic.Int64
	lastAt  atomic.Int64 // unix nanos
	pending atomic.Bool  // a type trigger seen, not yet snapshotted
	owner   atomic.Bool  // this instance owns partition 0 in the current generation
}

// NewSnapshotter returns the snapshotter of policy p, or nil without one (or
// without its store).
func NewSnapshotter(src Source, p *Policy) *Snapshotter {
	if p == nil || p.Store == nil {
		return nil
	}
	s := &Snapshotter{src: src, policy: *p}
	if s.policy.Keep == 0 {
		s.policy.Keep = 3
	}
	s.lastAt.Store(time.Now().UnixNano())
	return s
}

// due reports whether a trigger has fired, given the events consumed in all. The
// count and interval triggers belong to one instance (the owner of partition 0); a
// type trigger to whichever instance applied the event.
func (s *Snapshotter) due(consumed int64, owner bool) bool {
	p := s.policy
	switch {
	case s.pending.Load():
		return true
	case !owner:
		return false
	case p.EveryEvents > 0 && consumed-s.last.Load() >= p.EveryEvents:
		return true
	case p.Every > 0 && time.Since(time.Unix(0, s.lastAt.Load())) >= p.Every:
		return true
	}
	return false
}

// saw records the types a batch applied; a chosen type arms the trigger.
func (s *Snapshotter) saw(applied iter.Seq[string]) {
	if len(s.policy.OnTypes) == 0 {
		return
	}
	for t := range applied {
		if slices.Contains(s.policy.OnTypes, t) {
			s.pending.Store(true)
			return
		}
	}
}

// pruneTimeout bounds the prune that follows a snapshot stored, which runs even
// when the run is stopping.
const pruneTimeout = 30 * time.Second

// take snapshots now (one at a time, never while this runner rewrites snapshots)
// and prunes to Keep.
func (s *Snapshotter) take(ctx context.Context, owner bool) error {
	s.src.Mu.Lock()
	defer s.src.Mu.Unlock()
	consumed, err := s.consumed(ctx)
	if err != nil {
		return err
	}
	if !s.due(consumed, owner) {
		return nil // another trigger already took it
	}
	start := time.Now()
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: s.src.Pool, Schema: s.src.Schema, Projection: s.src.Projection, Topic: s.src.Topic}, s.policy.Store)
	if err != nil {
		return err
	}
	s.pending.Store(false)
	s.last.Store(m.Events)
	s.lastAt.Store(time.Now().UnixNano())
	// The snapshot is stored: prune even if the run is stopping meanwhile, else a
	// store that heeds ctx keeps one more than Keep until the next snapshot.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pruneTimeout)
	defer cancel()
	gone, err := snapshot.Prune(pctx, s.policy.Store, m.Projection, m.Version, s.policy.Keep)
	s.src.Log.Info("snapshot taken", zap.String("id", m.ID), zap.Int64("events", m.Events), zap.Int64("bytes", m.Bytes),
		zap.Duration("took", time.Since(start)), zap.Bool("sync", s.policy.Sync), zap.Int("pruned", len(gone)))
	return err
}

func (s *Snapshotter) consumed(ctx context.Context) (int64, error) {
	pos, err := s.src.Offsets.List(ctx, s.src.Pool, s.src.Projection.Name(), s.src.Projection.Version())
	var n int64
	for _, p := range pos {
		if p.Topic == s.src.Topic {
			n += p.Next
		}
	}
	return n, err
}

// AfterBatch runs in a worker after a committed batch, with the types it applied:
// in sync mode, a due snapshot is taken here, and the worker waits for it.
func (s *Snapshotter) AfterBatch(ctx context.Context, applied iter.Seq[string]) {
	s.saw(applied)
	if !s.policy.Sync {
		return
	}
	owner := s.owner.Load()
	consumed, err := s.consumed(ctx)
	if err != nil || !s.due(consumed, owner) {
		return
	}
	if err := s.take(ctx, owner); err != nil && !errors.Is(err, context.Canceled) {
		s.src.Log.Warn("snapshot failed", zap.Error(err))
	}
}

// Loop runs async snapshots, checking the triggers every half second. Every
// instance runs it: type triggers are local; owner says whether this instance owns
// partition 0 and with it the count and interval triggers.
func (s *Snapshotter) Loop(ctx context.Context, owner bool) {
	s.owner.Store(owner)
	poll.Every(ctx, 500*time.Millisecond, func() bool {
		if s.policy.Sync {
			return false
		}
		consumed, err := s.consumed(ctx)
		if err != nil || !s.due(consumed, owner) {
			return false
		}
		if err := s.take(ctx, owner); err != nil && ctx.Err() == nil {
			s.src.Log.Warn("snapshot failed", zap.Error(fmt.Errorf("async: %w", err)))
		}
		return false
	})
}
