package admin

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/readmodel"
)

// Blue/green read models. Each version of a projection lives in its own schema
// (users_v1, users_v2); readers query stable views in the projection's public schema
// (users.users), which point at the active version. Activating a version replaces
// every view in one transaction, so a reader sees the old version's tables or the
// new one's, never a mix and never an error; the old version keeps being built until
// it is dropped. A runner with Config.ActivateWhenLive activates its own version.

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
var ErrActiveVersion = store.ErrActiveVersion

func (v Versions) fw() string {
	if v.Schema == "" {
		return readmodel.FrameworkSchemaDefault
	}
	return v.Schema
}

// List returns the versions that have migrated, and which one is active.
func (v Versions) List(ctx context.Context) ([]VersionInfo, error) {
	active, at, err := store.ActiveVersion(ctx, v.Pool, v.fw(), v.Projection)
	if err != nil {
		return nil, err
	}
	versions, err := store.MigratedVersions(ctx, v.Pool, v.fw(), v.Projection)
	if err != nil {
		return nil, err
	}
	out := make([]VersionInfo, 0, len(versions))
	for _, n := range versions {
		info := VersionInfo{Version: n, Schema: store.VersionSchema(v.Projection, n), Active: n == active}
		if info.Active {
			info.ActivatedAt = at
		}
		out = append(out, info)
	}
	return out, nil
}

// Activate points the stable views (schema PROJECTION) at version's tables, in one
// transaction. It first locks every existing view at once with a short lock timeout
// and tries again on timeout: a reader holding one view while waiting for another
// would otherwise deadlock with the switch, and PostgreSQL might cancel the reader.
func (v Versions) Activate(ctx context.Context, version int) error {
	return activateRetry.Do(ctx, retry.Hooks{Retryable: store.IsLockTimeout, Attempts: 200}, func(ctx context.Context) error {
		return store.Activate(ctx, v.Pool, v.fw(), v.Projection, version)
	})
}

// activateRetry waits for readers' locks on the views: short waits, a reader's
// query being short.
var activateRetry = retry.Policy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}

// Drop deletes a version that is not active: its schema and the framework's rows
// for it (offsets, sequence marks, ids, parked events, migrations, effect watermarks).
func (v Versions) Drop(ctx context.Context, version int) error {
	return store.DropVersion(ctx, v.Pool, v.fw(), v.Projection, version)
}
