package projector

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/readmodel"
)

// Blue/green read models. Each version of a projection lives in its own schema
// (users_v1, users_v2); readers query stable views in the projection's public schema
// (users.users), which point at the active version. Activating a version replaces
// every view in one transaction, so a reader sees the old version's tables or the
// new one's, never a mix and never an error; the old version keeps being built until
// it is dropped.

// Versions manages a projection's versions in one database.
type Versions struct {
	Pool       *pgxpool.Pool
	Schema     string // framework schema; default readmodel.FrameworkSchemaDefault
	Projection string
}

// VersionInfo is one version of a projection.
type VersionInfo struct {
	Version     int        `json:"version"`
	Schema      string     `json:"schema"`
	Active      bool       `json:"active"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
}

// ErrActiveVersion is returned when dropping the version the views point at.
var ErrActiveVersion = errors.New("the version is active: activate another first")

func (v Versions) fw() string {
	if v.Schema == "" {
		return readmodel.FrameworkSchemaDefault
	}
	return v.Schema
}

// List returns the versions that have migrated, and which one is active.
func (v Versions) List(ctx context.Context) ([]VersionInfo, error) {
	fw := pgx.Identifier{v.fw()}.Sanitize()
	var active int
	var at *time.Time
	err := v.Pool.QueryRow(ctx, `SELECT version, activated_at FROM `+fw+`.active_versions WHERE projection = $1`, v.Projection).Scan(&active, &at)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && !isUndefinedTable(err) {
		return nil, err
	}
	rows, err := v.Pool.Query(ctx, `SELECT DISTINCT version FROM `+fw+`.migrations WHERE projection = $1 ORDER BY version`, v.Projection)
	if err != nil {
		return nil, err
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, err
	}
	out := make([]VersionInfo, 0, len(versions))
	for _, n := range versions {
		info := VersionInfo{Version: n, Schema: fmt.Sprintf("%s_v%d", v.Projection, n), Active: n == active}
		if info.Active {
			info.ActivatedAt = at
		}
		out = append(out, info)
	}
	return out, nil
}

// Activate points the stable views (schema PROJECTION) at version's tables, in one
// transaction. It first locks every existing view at once with a short lock timeout
// and retries on timeout: a reader holding one view while waiting for another would
// otherwise deadlock with the switch, and PostgreSQL might cancel the reader.
func (v Versions) Activate(ctx context.Context, version int) error {
	for attempt := 1; ; attempt++ {
		err := v.activate(ctx, version)
		var pgErr interface{ SQLState() string }
		if err == nil || !errors.As(err, &pgErr) || pgErr.SQLState() != "55P03" || attempt >= 200 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt%10) * 10 * time.Millisecond):
		}
	}
}

func (v Versions) activate(ctx context.Context, version int) error {
	src := fmt.Sprintf("%s_v%d", v.Projection, version)
	tx, err := v.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "projector:activate:"+v.Projection); err != nil {
		return err
	}
	if _, err := store.Up(ctx, tx, v.fw()); err != nil { // a savepoint in tx, under the setup lock
		return err
	}
	rows, err := tx.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, src)
	if err != nil {
		return err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return fmt.Errorf("projector: activate %s: schema %s has no tables (has version %d migrated here?)", v.Projection, src, version)
	}
	stable := pgx.Identifier{v.Projection}.Sanitize()
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+stable); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `SELECT viewname FROM pg_views WHERE schemaname = $1 ORDER BY viewname`, v.Projection)
	if err != nil {
		return err
	}
	existing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		names := make([]string, len(existing))
		for i, e := range existing {
			names[i] = pgx.Identifier{v.Projection, e}.Sanitize()
		}
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '100ms'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(names, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
			return err // 55P03: a reader holds one; Activate tries again
		}
	}
	keep := map[string]bool{}
	for _, t := range tables {
		keep[t] = true
		view := pgx.Identifier{v.Projection, t}.Sanitize()
		def := `SELECT * FROM ` + pgx.Identifier{src, t}.Sanitize()
		// CREATE OR REPLACE keeps the view's identity, so readers' prepared statements
		// stay valid; when the columns changed incompatibly, drop and create.
		if _, err := tx.Exec(ctx, `SAVEPOINT replace_view`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE OR REPLACE VIEW `+view+` AS `+def); err != nil {
			if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT replace_view`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DROP VIEW IF EXISTS `+view); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE VIEW `+view+` AS `+def); err != nil {
				return fmt.Errorf("projector: activate %s: view %s: %w", v.Projection, t, err)
			}
		}
	}
	for _, view := range existing {
		if !keep[view] { // a table the new version no longer has
			if _, err := tx.Exec(ctx, `DROP VIEW `+pgx.Identifier{v.Projection, view}.Sanitize()); err != nil {
				return err
			}
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+pgx.Identifier{v.fw()}.Sanitize()+`.active_versions (projection, version) VALUES ($1, $2)
		ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version, activated_at = now()`, v.Projection, version); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Drop deletes a version that is not active: its schema and the framework's rows
// for it (offsets, sequence marks, ids, parked events, migrations, effect watermarks).
func (v Versions) Drop(ctx context.Context, version int) error {
	fw := pgx.Identifier{v.fw()}.Sanitize()
	tx, err := v.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "projector:activate:"+v.Projection); err != nil {
		return err
	}
	if _, err := store.Up(ctx, tx, v.fw()); err != nil { // a savepoint in tx, under the setup lock
		return err
	}
	var active int
	err = tx.QueryRow(ctx, `SELECT version FROM `+fw+`.active_versions WHERE projection = $1`, v.Projection).Scan(&active)
	if err == nil && active == version {
		return fmt.Errorf("projector: drop %s_v%d: %w", v.Projection, version, ErrActiveVersion)
	}
	stmts := []string{
		`DROP SCHEMA IF EXISTS ` + pgx.Identifier{fmt.Sprintf("%s_v%d", v.Projection, version)}.Sanitize() + ` CASCADE`,
	}
	for _, t := range []string{"offsets", "effect_offsets", "aggregates", "event_ids", "parked", "migrations", "parked_effects", "effect_starts"} {
		stmts = append(stmts, `DELETE FROM `+fw+`.`+t+` WHERE projection = $1 AND version = $2`)
	}
	for i, s := range stmts {
		args := []any{v.Projection, version}
		if i == 0 {
			args = nil
		}
		if _, err := tx.Exec(ctx, s, args...); err != nil {
			return fmt.Errorf("projector: drop %s_v%d: %w", v.Projection, version, err)
		}
	}
	return tx.Commit(ctx)
}

func isUndefinedTable(err error) bool {
	var pgErr interface{ SQLState() string }
	return errors.As(err, &pgErr) && pgErr.SQLState() == "42P01"
}

// activateLoop activates this version once every partition is live (the owner of
// partition 0 runs it), then idles until the generation ends.
func (r *Runner) activateLoop(ctx context.Context) {
	v := Versions{Pool: r.cfg.Pool, Schema: r.cfg.Schema, Projection: r.cfg.Projection.Name()}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := Inspect(ctx, Inspection{Pool: r.cfg.Pool, Schema: r.cfg.Schema, Client: r.client, Topic: r.cfg.Topic,
			Projection: r.cfg.Projection.Name(), Version: r.cfg.Projection.Version(), ReadyLag: r.cfg.ReadyLag})
		if err != nil || !st.Ready {
			continue
		}
		infos, err := v.List(ctx)
		if err != nil {
			continue
		}
		for _, info := range infos {
			// Never undo an operator's choice: activate only over an older version.
			if info.Active && info.Version >= r.cfg.Projection.Version() {
				<-ctx.Done()
				return
			}
		}
		if err := v.Activate(ctx, r.cfg.Projection.Version()); err != nil {
			r.log.Warn("activating this version failed; retrying", zap.Error(err))
			continue
		}
		r.log.Info("version is live: the stable views now point at it", zap.String("schema", r.cfg.Projection.Schema()))
	}
}
