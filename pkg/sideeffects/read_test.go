package sideeffects_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/sideeffects"
)

// A run's read model handle reads the projection's tables by their bare names and
// cannot write them.
func TestReadModelReadsTheSchemaUnqualifiedAndRefusesWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL: run without -short")
	}
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	rm := pgx.Identifier{schema + "_rm"}.Sanitize()
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+rm+"; CREATE TABLE "+rm+".customers (id text PRIMARY KEY, address text); "+
		"INSERT INTO "+rm+".customers VALUES ('c1', '1 Main St')")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+rm+" CASCADE") })
	h := sideeffects.NewReadModel(pool, schema+"_rm")

	var addr string
	err = h.Read(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT address FROM customers WHERE id = $1", "c1").Scan(&addr)
	})
	if err != nil || addr != "1 Main St" {
		t.Fatalf("read: %q, %v; want 1 Main St", addr, err)
	}
	err = h.Read(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE customers SET address = 'elsewhere'")
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Fatalf("a write through the handle: %v, want SQLSTATE 25006 (read-only transaction)", err)
	}
	if err := (*sideeffects.ReadModel)(nil).Read(ctx, func(pgx.Tx) error { return nil }); err == nil {
		t.Fatal("a nil handle read without error")
	}
}
