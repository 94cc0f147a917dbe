// Package store owns the framework's schema: its tables, their numbered migrations
// and every query on them (grouped by table: offsets.go, aggregates.go, parked.go,
// effects.go, versions.go, snapshot.go; a test fails on SQL naming a framework
// table anywhere else in the module). Every framework table is created and altered
// here, and nowhere else: a change to one is a new file in migrations/, applied in
// order, once, under an advisory lock, by whichever process starts first (projector
// run, status, a test harness), or ahead of a deployment with `projector migrate`.
//
// The framework schema's name is configurable (default "projector"): migrations
// write {{schema}} where it goes.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.sql
var files embed.FS

// Migration is one numbered step of the framework's schema.
type Migration struct {
	Version int
	Name    string // the file's name without the number and extension
	SQL     string // with {{schema}} where the framework schema goes
}

// Migrations returns every migration the build knows, in order.
func Migrations() []Migration {
	names, err := fs.Glob(files, "migrations/*.sql")
	if err != nil {
		panic(err) // the pattern is constant
	}
	out := make([]Migration, 0, len(names))
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			panic(fmt.Sprintf("store: migration file %s: want NNNN_name.sql", n))
		}
		b, err := files.ReadFile(n)
		if err != nil {
			panic(err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// LockKey names the advisory lock under which a framework schema and the
// projections' schemas are set up, so that instances starting together do not race.
func LockKey(schema string) string { return "projector:setup:" + schema }

// ErrNewerSchema is returned when the database holds migrations this build does
// not know: an older build against a newer schema.
var ErrNewerSchema = errors.New("the framework schema is newer than this build")

// Migrate applies the pending migrations of schema in tx, which must hold the lock
// LockKey names (see Lock). It returns the versions it applied.
func Migrate(ctx context.Context, tx pgx.Tx, schema string) ([]int, error) {
	q := pgx.Identifier{schema}.Sanitize()
	for _, s := range []string{
		`CREATE SCHEMA IF NOT EXISTS ` + q,
		`CREATE TABLE IF NOT EXISTS ` + q + `.schema_migrations (
			version    int  PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`,
	} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("store: migrate %s: %w", schema, err)
		}
	}
	done, err := applied(ctx, tx, q)
	if err != nil {
		return nil, fmt.Errorf("store: migrate %s: %w", schema, err)
	}
	all := Migrations()
	known := map[int]bool{}
	for _, m := range all {
		known[m.Version] = true
	}
	for v := range done {
		if !known[v] {
			return nil, fmt.Errorf("store: %s has migration %d applied, this build knows up to %d: %w",
				schema, v, all[len(all)-1].Version, ErrNewerSchema)
		}
	}
	var ran []int
	for _, m := range all {
		if _, ok := done[m.Version]; ok {
			continue
		}
		if _, err := tx.Exec(ctx, strings.ReplaceAll(m.SQL, "{{schema}}", q)); err != nil {
			return nil, fmt.Errorf("store: %s migration %04d_%s: %w", schema, m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+q+`.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("store: %s migration %04d_%s: %w", schema, m.Version, m.Name, err)
		}
		ran = append(ran, m.Version)
	}
	return ran, nil
}

// Lock takes the setup lock of schema for the rest of tx.
func Lock(ctx context.Context, tx pgx.Tx, schema string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, LockKey(schema)); err != nil {
		return fmt.Errorf("store: lock %s: %w", schema, err)
	}
	return nil
}

// Beginner starts transactions: a pool, a connection.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Up applies the pending migrations of schema in a transaction of its own, under the
// setup lock, and returns the versions it applied.
func Up(ctx context.Context, db Beginner, schema string) ([]int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: migrate %s: %w", schema, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := Lock(ctx, tx, schema); err != nil {
		return nil, err
	}
	ran, err := Migrate(ctx, tx, schema)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("store: migrate %s: %w", schema, err)
	}
	return ran, nil
}

// State is one migration's state in a database.
type State struct {
	Migration
	AppliedAt *time.Time // nil: pending
	Unknown   bool       // applied, but this build does not know it
}

// Querier runs queries: a pool, a connection, a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Status returns every known migration with when it was applied (nil: pending),
// and any applied one this build does not know.
func Status(ctx context.Context, db Querier, schema string) ([]State, error) {
	q := pgx.Identifier{schema}.Sanitize()
	done, err := applied(ctx, db, q)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") { // no table, no schema: nothing applied
		done, err = map[int]appliedRow{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: status of %s: %w", schema, err)
	}
	var out []State
	for _, m := range Migrations() {
		s := State{Migration: m}
		if a, ok := done[m.Version]; ok {
			s.AppliedAt = &a.at
			delete(done, m.Version)
		}
		out = append(out, s)
	}
	for v, a := range done {
		out = append(out, State{Migration: Migration{Version: v, Name: a.name}, AppliedAt: &a.at, Unknown: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

type appliedRow struct {
	name string
	at   time.Time
}

func applied(ctx context.Context, db Querier, q string) (map[int]appliedRow, error) {
	rows, err := db.Query(ctx, `SELECT version, name, applied_at FROM `+q+`.schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]appliedRow{}
	for rows.Next() {
		var v int
		var a appliedRow
		if err := rows.Scan(&v, &a.name, &a.at); err != nil {
			return nil, err
		}
		out[v] = a
	}
	return out, rows.Err()
}
