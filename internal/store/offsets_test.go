package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

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

// The queries the chaos harness, the demo's check and the benchmark read positions
// with, and the trigger the chaos harness audits them by: on a fresh schema, over
// two versions and two topics.
func TestPositionReadersAndTheOffsetsTrigger(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	exists, err := store.OffsetsExist(ctx, pool, schema)
	require.NoError(t, err)
	require.False(t, exists, "no tables before the migrations")
	_, err = store.Up(ctx, pool, schema)
	require.NoError(t, err)
	exists, err = store.OffsetsExist(ctx, pool, schema)
	require.NoError(t, err)
	require.True(t, exists)

	q := pgx.Identifier{schema}.Sanitize()
	_, err = pool.Exec(ctx, `CREATE TABLE `+q+`.audit (partition int, next bigint);
		CREATE FUNCTION `+q+`.audit_offsets() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO `+q+`.audit VALUES (NEW.partition, NEW.next_offset); RETURN NEW; END $$`)
	require.NoError(t, err)
	for range 2 { // again: replaced, not doubled
		require.NoError(t, store.TriggerOnOffsets(ctx, pool, schema, "audit", q+".audit_offsets()"))
	}

	rows := []struct {
		version   int
		topic     string
		partition int
		member    string
		next      int64
	}{{1, "t", 0, "a", 10}, {1, "t", 1, "b", 20}, {1, "u", 0, "c", 300}, {2, "t", 2, "d", 4000}}
	for _, r := range rows {
		k := store.Partition{Projection: "users", Version: r.version, Topic: r.topic, Partition: r.partition}
		_, err := store.ClaimOffset(ctx, pool, schema, k, 1, r.member, time.Minute)
		require.NoError(t, err)
		sql, args := store.AdvanceOffset(schema, k, 1, r.member, 0, r.next, r.next)
		tag, err := pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
		require.EqualValues(t, 1, tag.RowsAffected())
	}
	_, err = store.ClaimOffset(ctx, pool, schema, store.Partition{Projection: "orders", Version: 1, Topic: "t"}, 1, "z", time.Minute)
	require.NoError(t, err)

	sum, err := store.SumNextOffsets(ctx, pool, schema, "users", 1, "t")
	require.NoError(t, err)
	require.EqualValues(t, 30, sum)
	sum, err = store.SumNextOffsetsAnyVersion(ctx, pool, schema, "users")
	require.NoError(t, err)
	require.EqualValues(t, 4330, sum)
	next, err := store.NextOffsetsAnyVersion(ctx, pool, schema, "users", "t")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 10, 1: 20, 2: 4000}, next)
	owners, err := store.OffsetOwners(ctx, pool, schema, "users")
	require.NoError(t, err)
	require.Len(t, owners, 3)
	require.Equal(t, "b", owners[1])
	require.Equal(t, "d", owners[2])

	var audited int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+q+`.audit`).Scan(&audited))
	require.Equal(t, 2*len(rows)+1, audited, "each claim and each advance audited once")
}
