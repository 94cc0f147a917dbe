package readmodel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/store"
)

// FrameworkSchemaDefault is the schema of the framework's own tables (offsets,
// migrations, parked events), unless configured otherwise.
const FrameworkSchemaDefault = "projector"

// Setup applies the framework schema's pending migrations (package internal/store),
// creates the projection's schema and applies the projection's pending migration
// steps, in one transaction, under an advisory lock so that instances starting
// together migrate once. It refuses to
// start when an applied step's text has changed since it was applied.
func Setup(ctx context.Context, pool *pgxpool.Pool, frameworkSchema string, p *Projection) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("readmodel: migrate %s: %w", p.Schema(), err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := store.Lock(ctx, tx, frameworkSchema); err != nil {
		return fmt.Errorf("readmodel: migrate %s: %w", p.Schema(), err)
	}
	if _, err := store.Migrate(ctx, tx, frameworkSchema); err != nil {
		return fmt.Errorf("readmodel: migrate %s: %w", p.Schema(), err)
	}
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{p.Schema()}.Sanitize()); err != nil {
		return fmt.Errorf("readmodel: migrate %s: %w", p.Schema(), err)
	}
	applied, err := store.AppliedSteps(ctx, tx, frameworkSchema, p.name, p.version)
	if err != nil {
		return fmt.Errorf("readmodel: migrate %s: %w", p.Schema(), err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+pgx.Identifier{p.Schema()}.Sanitize()+`, public`); err != nil {
		return err
	}
	for i, step := range p.migrations {
		sum := checksum(step)
		if prev, ok := applied[i]; ok {
			if prev != sum {
				return fmt.Errorf("readmodel: %s migration step %d changed since it was applied: add a new step, or bump the projection's version", p.Schema(), i)
			}
			continue
		}
		if _, err := tx.Exec(ctx, step); err != nil {
			return fmt.Errorf("readmodel: %s migration step %d: %w", p.Schema(), i, err)
		}
		if err := store.RecordStep(ctx, tx, frameworkSchema, p.name, p.version, i, sum); err != nil {
			return err
		}
	}
	if len(applied) > len(p.migrations) {
		return fmt.Errorf("readmodel: %s has %d applied migration steps, the code knows %d: an older build against a newer schema", p.Schema(), len(applied), len(p.migrations))
	}
	return tx.Commit(ctx)
}

func checksum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
