// Package projectortest lets users test their projections against a real PostgreSQL
// transaction without Kafka: apply events through the projection's own handlers and
// migrations, then assert on the read model with ordinary queries.
//
// The harness exercises what a projection author writes — migrations and handlers —
// exactly as the runtime runs them (typed decoding with upcasting, statements queued
// on a Writer and sent in one round trip, one transaction per Apply). Offsets,
// deduplication and parking are the runtime's and are tested there.
package projectortest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// Harness applies events to one projection in a PostgreSQL database.
type Harness struct {
	pool *pgxpool.Pool
	db   *pgxpool.Pool // search_path = the projection's schema
	p    *readmodel.Projection
	fw   string
}

// Open runs the projection's migrations into its schema (name_vN) and returns a
// harness. The framework's migration bookkeeping goes into schema fw
// ("projector_test" when empty). Close drops both.
func Open(ctx context.Context, pool *pgxpool.Pool, p *readmodel.Projection, fw string) (*Harness, error) {
	if fw == "" {
		fw = "projector_test"
	}
	if err := readmodel.Setup(ctx, pool, fw, p); err != nil {
		return nil, err
	}
	cfg := pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["search_path"] = p.Schema() + ", public"
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Harness{pool: pool, db: db, p: p, fw: fw}, nil
}

// New is Open for tests: it fails the test on error and closes at cleanup.
func New(tb testing.TB, pool *pgxpool.Pool, p *readmodel.Projection) *Harness {
	tb.Helper()
	h, err := Open(context.Background(), pool, p, "projector_test_"+p.Name())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

// Close drops the projection's schema and the harness's framework schema.
func (h *Harness) Close(ctx context.Context) error {
	h.db.Close()
	_, err := h.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{h.p.Schema()}.Sanitize()+" CASCADE")
	if err != nil {
		return err
	}
	_, err = h.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{h.fw}.Sanitize()+" CASCADE")
	return err
}

// Apply decodes the events with the projection's registry and runs their handlers in
// one transaction, committed when every handler and statement succeeded. Events of
// types the projection does not handle are skipped, as the runtime skips them.
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
	for i, e := range evs {
		d, err := h.p.Registry().Decode(e)
		if err != nil {
			return fmt.Errorf("event %d (%s): %w", i, e.ID, err)
		}
		if !h.p.Handles(e.Type) {
			continue
		}
		if err := h.p.Apply(ctx, w, d); err != nil {
			return fmt.Errorf("event %d (%s): %w", i, e.ID, err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// DB returns a pool whose connections have the projection's schema first on the
// search path, for assertions with unqualified table names.
func (h *Harness) DB() *pgxpool.Pool { return h.db }
