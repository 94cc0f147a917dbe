// Package projectortest lets users test their projections against a real PostgreSQL
// transaction without Kafka: apply events through the projection's own handlers and
// migrations, then assert on the read model with ordinary queries.
//
// The harness exercises what a projection author writes — migrations and handlers —
// exactly as the runtime runs them (typed decoding with upcasting, statements queued
// on a Writer and sent in one round trip, one transaction per Apply). Offsets,
// deduplication and parking are the runtime's and are tested there.
//
// Each harness works in scratch schemas of its own, with names no one else uses, and
// drops only those: tests can run in parallel, and against a database that holds the
// projection's real read model, which the harness never touches.
package projectortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/rmhook"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// Harness applies events to one projection in scratch schemas of its own.
type Harness struct {
	pool *pgxpool.Pool
	db   *pgxpool.Pool         // search_path = the scratch schema
	p    *readmodel.Projection // the projection, in the scratch schema
	fw   string                // the scratch schema of the migration bookkeeping
}

// Open creates a scratch schema with a name of its own, runs the projection's
// migrations into it and returns a harness; the framework's migration bookkeeping
// goes into a second scratch schema. Close drops those two and nothing else: pointed
// at a database that holds the projection's real read model (NAME_vN), the harness
// neither reads nor changes it.
func Open(ctx context.Context, pool *pgxpool.Pool, p *readmodel.Projection) (*Harness, error) {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("projectortest: scratch schema name: %w", err)
	}
	base := p.Schema()
	if len(base) > 32 {
		base = base[:32]
	}
	scratch := "ptest_" + base + "_" + hex.EncodeToString(b[:])
	h := &Harness{pool: pool, p: p.InSchema(scratch), fw: scratch + "_fw"}
	if err := readmodel.Setup(ctx, pool, h.fw, h.p); err != nil {
		_ = h.drop(ctx)
		return nil, err
	}
	cfg := pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{scratch}.Sanitize() + ", public"
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		_ = h.drop(ctx)
		return nil, err
	}
	h.db = db
	return h, nil
}

// New is Open for tests: it fails the test on error and closes at cleanup.
func New(tb testing.TB, pool *pgxpool.Pool, p *readmodel.Projection) *Harness {
	tb.Helper()
	h, err := Open(context.Background(), pool, p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.Close(context.Background()); err != nil {
			tb.Errorf("projectortest: close: %v", err)
		}
	})
	return h
}

// Schema returns the scratch schema the projection's tables live in.
func (h *Harness) Schema() string { return h.p.Schema() }

// Close closes the DB pool and drops the harness's two scratch schemas.
func (h *Harness) Close(ctx context.Context) error {
	h.db.Close()
	return h.drop(ctx)
}

func (h *Harness) drop(ctx context.Context) error {
	_, err := h.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{h.p.Schema()}.Sanitize()+", "+pgx.Identifier{h.fw}.Sanitize()+" CASCADE")
	return err
}

// Apply decodes the events with the projection's registry and runs their handlers in
// one transaction, committed when every handler and statement succeeded, as the
// runtime runs one batch: the rows the handlers declared (readmodel.Loads) loaded
// first, the tables' rows written at the end. Events of types the projection does
// not handle are skipped, as the runtime skips them.
func (h *Harness) Apply(ctx context.Context, evs ...events.Event) error {
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{h.p.Schema()}.Sanitize()+", public"); err != nil {
		return err
	}
	w := readmodel.NewWriter(tx)
	rmhook.Schema(w, h.p.Schema()) // new rows go by COPY, as in the runtime's batches
	ds, at := make([]events.Decoded, 0, len(evs)), make([]int, 0, len(evs))
	for i, e := range evs {
		d, err := h.p.Registry().Decode(e)
		if err != nil {
			return fmt.Errorf("event %d (%s): %w", i, e.ID, err)
		}
		if h.p.Handles(e.Type) {
			ds, at = append(ds, d), append(at, i)
		}
	}
	// The rows the handlers declared, loaded at once, as the runtime does per batch.
	if err := h.p.Preload(ctx, w, ds); err != nil {
		return err
	}
	for i, d := range ds {
		if err := h.p.Apply(ctx, w, d); err != nil {
			return fmt.Errorf("event %d (%s): %w", at[i], d.ID, err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// DB returns a pool whose connections have the scratch schema first on the search
// path, for assertions with unqualified table names.
func (h *Harness) DB() *pgxpool.Pool { return h.db }
