package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/internal/testenv"
)

// Effect watermarks kept as "NAME/fx/EFFECT" offsets rows before migration 3 move to
// effect_offsets, intact; the read model's rows stay.
func TestEffectWatermarksMoveToATableOfTheirOwn(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	q := pgx.Identifier{schema}.Sanitize()
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, store.Lock(ctx, tx, schema))
	// Migrations 1 and 2 as an older build ran them.
	_, err = tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+q+`;
		CREATE TABLE `+q+`.schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	for _, m := range store.Migrations()[:2] {
		_, err = tx.Exec(ctx, replaceSchema(m.SQL, q))
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `INSERT INTO `+q+`.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		require.NoError(t, err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+q+`.offsets (projection, version, topic, partition, next_offset, generation, member, consumed) VALUES
		('users', 1, 't', 0, 100, 3, 'm', 100), ('users/fx/welcome_email', 1, 't', 0, 90, 3, 'm', 90)`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	ran, err := store.Up(ctx, pool, schema)
	require.NoError(t, err)
	require.Contains(t, ran, 3)
	var effect, projection string
	var next int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT effect, projection, next_offset FROM `+q+`.effect_offsets`).Scan(&effect, &projection, &next))
	require.Equal(t, []any{"welcome_email", "users", int64(90)}, []any{effect, projection, next})
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+q+`.offsets`).Scan(&n))
	require.Equal(t, 1, n, "the read model's row stays, the effect's moved")
}

func replaceSchema(sql, q string) string { return strings.ReplaceAll(sql, "{{schema}}", q) }
