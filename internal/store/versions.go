package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Blue/green read models. Each version of a projection lives in its own schema
// (users_v1, users_v2); readers query stable views in the projection's public schema
// (users.users), which point at the active version. Activating a version replaces
// every view in one transaction, so a reader sees the old version's tables or the
// new one's, never a mix and never an error.

// ErrActiveVersion is returned when dropping the version the views point at.
var ErrActiveVersion = errors.New("the version is active: activate another first")

// errLockTimeout is PostgreSQL's lock_not_available: a reader holds a view.
const errLockTimeout = "55P03"

// ActiveVersion returns the projection's active version and when it was activated;
// 0 and nil when none is (or the framework schema is not set up).
func ActiveVersion(ctx context.Context, db Querier, schema, projection string) (int, *time.Time, error) {
	rows, err := db.Query(ctx, `SELECT version, activated_at FROM `+table(schema, tableActiveVersions)+`
		WHERE projection = $1`, projection)
	if err != nil {
		return 0, nil, err
	}
	type active struct {
		Version     int
		ActivatedAt *time.Time
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[active])
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" {
		return 0, nil, nil
	}
	if err != nil || len(got) == 0 {
		return 0, nil, err
	}
	return got[0].Version, got[0].ActivatedAt, nil
}

// MigratedVersions returns the projection's versions that have migrated, in order.
func MigratedVersions(ctx context.Context, db Querier, schema, projection string) ([]int, error) {
	rows, err := db.Query(ctx, `SELECT DISTINCT version FROM `+table(schema, tableMigrations)+`
		WHERE projection = $1 ORDER BY version`, projection)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// VersionSchema names the schema of a projection version's tables.
func VersionSchema(projection string, version int) string {
	return fmt.Sprintf("%s_v%d", projection, version)
}

// Activate points the stable views (schema PROJECTION) at version's tables, in one
// transaction under the projection's activation lock. It first locks every existing
// view at once with a short lock timeout: a reader holding one view while waiting
// for another would otherwise deadlock with the switch. A timeout returns an error
// IsLockTimeout reports; the caller tries again.
func Activate(ctx context.Context, db Beginner, schema, projection string, version int) error {
	tx, err := beginVersions(ctx, db, schema, projection)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	src := VersionSchema(projection, version)
	tables, err := names(ctx, tx, `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, src)
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return fmt.Errorf("store: activate %s: schema %s has no tables (has version %d migrated here?)", projection, src, version)
	}
	existing, err := lockViews(ctx, tx, projection)
	if err != nil {
		return err
	}
	if err := replaceViews(ctx, tx, projection, src, tables, existing); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+table(schema, tableActiveVersions)+` (projection, version) VALUES ($1, $2)
		ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version, activated_at = now()`, projection, version); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// IsLockTimeout reports whether Activate gave up waiting for a reader's lock.
func IsLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == errLockTimeout
}

// beginVersions begins a transaction holding the projection's activation lock, the
// framework schema migrated (a savepoint in it, under the setup lock).
func beginVersions(ctx context.Context, db Beginner, schema, projection string) (pgx.Tx, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "projector:activate:"+projection); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	if _, err := Up(ctx, tx, schema); err != nil { // a savepoint in tx, under the setup lock
		_ = tx.Rollback(ctx)
		return nil, err
	}
	return tx, nil
}

func names(ctx context.Context, tx pgx.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// lockViews creates the stable schema if need be and locks its views, all at once,
// with a short timeout; it returns their names.
func lockViews(ctx context.Context, tx pgx.Tx, projection string) ([]string, error) {
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{projection}.Sanitize()); err != nil {
		return nil, err
	}
	existing, err := names(ctx, tx, `SELECT viewname FROM pg_views WHERE schemaname = $1 ORDER BY viewname`, projection)
	if err != nil || len(existing) == 0 {
		return existing, err
	}
	quoted := make([]string, len(existing))
	for i, e := range existing {
		quoted[i] = pgx.Identifier{projection, e}.Sanitize()
	}
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '100ms'`); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(quoted, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		return nil, err // 55P03: a reader holds one; the caller tries again
	}
	return existing, nil
}

// replaceViews points a view at each of src's tables and drops the views of tables
// src no longer has.
func replaceViews(ctx context.Context, tx pgx.Tx, projection, src string, tables, existing []string) error {
	keep := map[string]bool{}
	for _, t := range tables {
		keep[t] = true
		if err := replaceView(ctx, tx, pgx.Identifier{projection, t}.Sanitize(), `SELECT * FROM `+pgx.Identifier{src, t}.Sanitize()); err != nil {
			return fmt.Errorf("store: activate %s: view %s: %w", projection, t, err)
		}
	}
	for _, view := range existing {
		if !keep[view] { // a table the new version no longer has
			if _, err := tx.Exec(ctx, `DROP VIEW `+pgx.Identifier{projection, view}.Sanitize()); err != nil {
				return err
			}
		}
	}
	return nil
}

// replaceView uses CREATE OR REPLACE, which keeps the view's identity so that
// readers' prepared statements stay valid; when the columns changed incompatibly,
// it drops and creates.
func replaceView(ctx context.Context, tx pgx.Tx, view, def string) error {
	if _, err := tx.Exec(ctx, `SAVEPOINT replace_view`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE OR REPLACE VIEW `+view+` AS `+def); err == nil {
		return nil
	}
	if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT replace_view`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DROP VIEW IF EXISTS `+view); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `CREATE VIEW `+view+` AS `+def)
	return err
}

// DropVersion deletes a version that is not active: its schema and the framework's
// rows for it (offsets, sequence marks, ids, parked events, migrations, effect
// watermarks and starts). The active version is refused with ErrActiveVersion.
func DropVersion(ctx context.Context, db Beginner, schema, projection string, version int) error {
	tx, err := beginVersions(ctx, db, schema, projection)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	active, _, err := ActiveVersion(ctx, tx, schema, projection)
	if err != nil {
		return err
	}
	if active == version {
		return fmt.Errorf("store: drop %s: %w", VersionSchema(projection, version), ErrActiveVersion)
	}
	if _, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{VersionSchema(projection, version)}.Sanitize()+` CASCADE`); err != nil {
		return fmt.Errorf("store: drop %s: %w", VersionSchema(projection, version), err)
	}
	for _, t := range []string{tableOffsets, tableEffectOffsets, tableAggregates, tableEventIDs, tableParked, tableMigrations, tableParkedEffects, tableEffectStarts} {
		if _, err := tx.Exec(ctx, `DELETE FROM `+table(schema, t)+` WHERE projection = $1 AND version = $2`, projection, version); err != nil {
			return fmt.Errorf("store: drop %s: %w", VersionSchema(projection, version), err)
		}
	}
	return tx.Commit(ctx)
}

// AppliedSteps returns a projection version's applied migration steps (package
// readmodel), each with its text's checksum.
func AppliedSteps(ctx context.Context, db Querier, schema, projection string, version int) (map[int]string, error) {
	rows, err := db.Query(ctx, `SELECT step, checksum FROM `+table(schema, tableMigrations)+` WHERE projection = $1 AND version = $2`, projection, version)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int]string{}
	for rows.Next() {
		var step int
		var sum string
		if err := rows.Scan(&step, &sum); err != nil {
			return nil, err
		}
		applied[step] = sum
	}
	return applied, rows.Err()
}

// RecordStep records a projection version's migration step as applied, with its
// text's checksum.
func RecordStep(ctx context.Context, db Execer, schema, projection string, version, step int, checksum string) error {
	_, err := db.Exec(ctx, `INSERT INTO `+table(schema, tableMigrations)+` (projection, version, step, checksum) VALUES ($1, $2, $3, $4)`,
		projection, version, step, checksum)
	return err
}
