package forget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/snapshot"
)

// Purge applies the projection's SubjectForgotten handler, in one
// transaction, for every subject the key store has forgotten since since (zero: all).
// A restored snapshot may predate a forgetting, or have been taken while its
// SubjectForgotten was still unread: purging after every restore makes a bootstrap
// as clean as a replay. Handlers must be idempotent (an UPDATE or DELETE by subject
// is). Returns how many subjects were purged; 0 when the projection does not handle
// SubjectForgotten.
func Purge(ctx context.Context, pool *pgxpool.Pool, p *readmodel.Projection, keys shred.KeyStore, since time.Time) (int, error) {
	if keys == nil || !p.Handles(shred.TypeSubjectForgotten) {
		return 0, nil
	}
	fs, err := keys.Forgotten(ctx, since)
	if err != nil || len(fs) == 0 {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{p.Schema()}.Sanitize()+", public"); err != nil {
			return err
		}
		w := readmodel.NewWriter(tx)
		for _, f := range fs {
			data, err := jsonOf(shred.SubjectForgotten{SubjectID: f.Subject, At: f.At, Keys: f.Keys})
			if err != nil {
				return err
			}
			d, err := p.Registry().Decode(events.Event{ID: "purge-" + f.Subject, Source: "projector", Type: shred.TypeSubjectForgotten,
				Subject: f.Subject, Time: f.At, DataContentType: events.ContentTypeJSON, Data: data})
			if err != nil {
				return err
			}
			if err := p.Apply(ctx, w, d); err != nil {
				return fmt.Errorf("purge %s: %w", f.Subject, err)
			}
			if w.Pending() >= 256 {
				if err := w.Flush(ctx); err != nil {
					return err
				}
			}
		}
		return w.Flush(ctx)
	})
	if err != nil {
		return 0, fmt.Errorf("projector: purge forgotten subjects from %s: %w", p.Schema(), err)
	}
	return len(fs), nil
}

// Forgettings lists the subjects forgotten after a time, oldest first: a
// shred.KeyStore does, and shred.PGForgotten does without the master key.
type Forgettings interface {
	Forgotten(ctx context.Context, since time.Time) ([]shred.Forgetting, error)
}

// InSnapshots returns, for each snapshot of the projection version in the
// store (by id), how many forgotten subjects' data it may still hold: those
// forgotten after it was last rewritten clean (its manifest's ScrubbedThrough; zero
// for a snapshot never rewritten). Only a rewrite proves a snapshot clean: one taken
// after a forgetting may still have been taken before its SubjectForgotten was
// applied. A projector.Runner with the store rewrites these (see its Config.ScrubStore), as does
// ScrubSnapshots. A projection that does not handle SubjectForgotten has nothing to
// purge: every count is 0.
func InSnapshots(ctx context.Context, store snapshot.Store, p *readmodel.Projection, forgotten Forgettings) (map[string]int, error) {
	ms, err := store.List(ctx, p.Name(), p.Version())
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	out := make(map[string]int, len(ms))
	if !p.Handles(shred.TypeSubjectForgotten) {
		for _, m := range ms {
			out[m.ID] = 0
		}
		return out, nil
	}
	oldest := ms[0].ScrubbedThrough
	for _, m := range ms {
		if m.ScrubbedThrough.Before(oldest) {
			oldest = m.ScrubbedThrough
		}
	}
	fs, err := forgotten.Forgotten(ctx, oldest)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		n := 0
		for _, f := range fs {
			if f.At.After(m.ScrubbedThrough) {
				n++
			}
		}
		out[m.ID] = n
	}
	return out, nil
}

// Scrub says which snapshots to rewrite after subjects were forgotten.
type Scrub struct {
	Pool       *pgxpool.Pool // where a snapshot is restored to be rewritten (a scratch schema, dropped after)
	Store      snapshot.Store
	Projection *readmodel.Projection
	Topic      string
	Keys       shred.KeyStore
	Logger     *zap.Logger
}

// Scrubbed is one snapshot rewritten.
type Scrubbed struct {
	Old, New string
	Subjects int
	Took     time.Duration
}

// ScrubSnapshots rewrites every snapshot of the projection version that may hold
// data of a forgotten subject (InSnapshots): restored into a scratch
// schema, purged (Purge), taken again with the same offsets and creation
// time under a new id, recording ScrubbedThrough, and the old one deleted. Snapshots
// then hold no personal data of forgotten subjects at rest, and a bootstrap from one
// is clean. It does nothing, cheaply, when no snapshot needs it.
//
// One scrubber at a time per projection version: an advisory lock in Pool's
// database, and the store's own lock when it has one (snapshot.Locker: a folder's
// flock), for services with databases of their own sharing a store. When another
// holds either, it returns ErrScrubBusy and rewrites nothing.
func ScrubSnapshots(ctx context.Context, s Scrub) ([]Scrubbed, error) {
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
	if s.Keys == nil || !s.Projection.Handles(shred.TypeSubjectForgotten) {
		return nil, nil
	}
	if due, err := scrubDue(ctx, s); err != nil || !due {
		return nil, err
	}
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	unlock, err := lockScrub(ctx, conn, s)
	if err != nil {
		return nil, err
	}
	defer unlock()
	left, err := scratchSchemas(ctx, s.Pool, s.Projection)
	if err != nil {
		return nil, err
	}
	// Scratch schemas a killed scrub left behind hold a restored, unpurged copy.
	for _, sc := range left {
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{sc}.Sanitize()+" CASCADE"); err != nil {
			return nil, err
		}
		s.Logger.Info("dropped a scratch schema a stopped scrub left", zap.String("schema", sc))
	}
	// Under the locks, from the start: another scrubber may have rewritten some.
	ms, err := s.Store.List(ctx, s.Projection.Name(), s.Projection.Version())
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	fs, err := s.Keys.Forgotten(ctx, time.Time{})
	if err != nil || len(fs) == 0 {
		return nil, err
	}
	// Forgettings are serialised and stamped in commit order (shred.PGKeys.Forget):
	// every one up to through is in fs, and a later one has a later time.
	through := fs[len(fs)-1].At
	var out []Scrubbed
	var errs []error
	for _, m := range ms {
		if !m.ScrubbedThrough.Before(through) {
			continue
		}
		start := time.Now()
		n, nm, err := scrubOne(ctx, s, m, through)
		if err != nil {
			// One that cannot be rewritten (corrupt, other migrations) does not keep
			// the others from being rewritten; it stays listed as holding data.
			errs = append(errs, fmt.Errorf("projector: scrub snapshot %s: %w", m.ID, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		sc := Scrubbed{Old: m.ID, New: nm.ID, Subjects: n, Took: time.Since(start)}
		s.Logger.Info("rewrote a snapshot without forgotten subjects' data", zap.String("old", sc.Old), zap.String("new", sc.New),
			zap.Int("subjects", n), zap.Duration("took", sc.Took))
		out = append(out, sc)
	}
	return out, errors.Join(errs...)
}

// scrubDue reports whether a scrub has anything to do: a snapshot that may hold a
// forgotten subject's data, or a scratch schema a stopped scrub left.
func scrubDue(ctx context.Context, s Scrub) (bool, error) {
	pending, err := InSnapshots(ctx, s.Store, s.Projection, s.Keys)
	if err != nil {
		return false, err
	}
	left, err := scratchSchemas(ctx, s.Pool, s.Projection)
	if err != nil {
		return false, err
	}
	due := len(left) > 0
	for _, n := range pending {
		due = due || n > 0
	}
	return due, nil
}

// lockScrub takes the scrub's locks, the database's and the store's, or returns
// ErrScrubBusy; unlock releases both.
func lockScrub(ctx context.Context, conn *pgxpool.Conn, s Scrub) (unlock func(), err error) {
	lock := fmt.Sprintf("projector:scrub:%s:%d", s.Projection.Name(), s.Projection.Version())
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, lock).Scan(&got); err != nil {
		return nil, err
	}
	if !got {
		return nil, ErrScrubBusy
	}
	release := func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, lock)
	}
	if l, ok := s.Store.(snapshot.Locker); ok {
		unlock, err := l.TryLock(ctx, s.Projection.Name(), s.Projection.Version())
		if err != nil {
			release()
			if errors.Is(err, snapshot.ErrLocked) {
				return nil, ErrScrubBusy
			}
			return nil, err
		}
		return func() { unlock(); release() }, nil
	}
	return release, nil
}

func scratchSchemas(ctx context.Context, pool *pgxpool.Pool, p *readmodel.Projection) ([]string, error) {
	rows, err := pool.Query(ctx, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)`, scratchPrefix(p))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func scrubOne(ctx context.Context, s Scrub, m snapshot.Manifest, through time.Time) (int, *snapshot.Manifest, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	scratch := scratchPrefix(s.Projection) + hex.EncodeToString(b[:])
	fw := scratch + "_projector"
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = s.Pool.Exec(dctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{scratch}.Sanitize()+" CASCADE; DROP SCHEMA IF EXISTS "+pgx.Identifier{fw}.Sanitize()+" CASCADE")
	}()
	proj := s.Projection.InSchema(scratch)
	if err := readmodel.Setup(ctx, s.Pool, fw, proj); err != nil {
		return 0, nil, err
	}
	// ScrubSnapshots holds the store's lock: the restore must not wait for it.
	if _, err := snapshot.Restore(ctx, heldStore{s.Store}, m.ID, snapshot.Target{Pool: s.Pool, Schema: fw, Projection: proj, Topic: s.Topic}); err != nil {
		return 0, nil, err
	}
	n, err := Purge(ctx, s.Pool, proj, s.Keys, m.ScrubbedThrough)
	if err != nil {
		return 0, nil, err
	}
	nm, err := snapshot.Take(ctx, snapshot.Source{Pool: s.Pool, Schema: fw, Projection: proj, Topic: s.Topic, Rewrites: &m, ScrubbedThrough: through}, s.Store)
	if err != nil {
		return 0, nil, err
	}
	if err := s.Store.Delete(ctx, m.Projection, m.Version, m.ID); err != nil {
		return 0, nil, fmt.Errorf("rewritten as %s, but the old one could not be deleted: %w", nm.ID, err)
	}
	return n, nm, nil
}

// heldStore is a store whose lock the caller holds: it hides the snapshot.Locker.
type heldStore struct{ snapshot.Store }

func jsonOf(v any) (json.RawMessage, error) { return json.Marshal(v) }

// ErrScrubBusy means another instance or process is rewriting this projection version's
// snapshots; try again later.
var ErrScrubBusy = errors.New("another instance is rewriting the snapshots")

// scratchPrefix names the scratch schemas of a projection version's scrubs.
func scratchPrefix(p *readmodel.Projection) string {
	return fmt.Sprintf("scrub_%s_v%d_", p.Name(), p.Version())
}
