package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The framework's tables, created and altered by migrations/: the one place outside
// migrations/ that names them. Every query on them is a function of this package,
// grouped by table (offsets.go, aggregates.go, parked.go, effects.go, versions.go),
// so that a renamed or split table is one change here; a test
// (TestNoFrameworkTableNamedOutsideStore) fails on SQL naming one anywhere else.
const (
	tableOffsets        = "offsets"         // the read model's position per partition
	tableEffectOffsets  = "effect_offsets"  // each effect's watermark per partition
	tableAggregates     = "aggregates"      // the last applied sequence and its window per aggregate
	tableEventIDs       = "event_ids"       // ids of applied events that carry no sequence
	tableParked         = "parked"          // parked events
	tableParkedEffects  = "parked_effects"  // parked effect runs
	tableEffectStarts   = "effect_starts"   // when each effect started on each partition: its horizon
	tableActiveVersions = "active_versions" // the version the stable views point at, per projection
	tableMigrations     = "migrations"      // each projection version's applied migration steps
)

// table returns the quoted, schema-qualified name of a framework table in schema.
func table(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }

// Queue is where a write is queued to be sent with the others of a batch, in one
// round trip, inside the batch's transaction: a readmodel.Writer. The Queue…
// functions queue on it; the write's error surfaces when the queue is sent.
type Queue interface {
	Exec(sql string, args ...any)
}

// Execer runs statements: a pool, a connection, a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// RowQuerier runs one-row queries: a pool, a connection, a transaction.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
