package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/internal/testenv"
)

func TestMigrationsAreNumberedFromOneWithoutHoles(t *testing.T) {
	t.Parallel()
	for i, m := range store.Migrations() {
		require.Equal(t, i+1, m.Version, m.Name)
		require.NotEmpty(t, m.Name)
		require.Contains(t, m.SQL, "{{schema}}")
	}
}

func TestUpMigratesOnceConcurrentlyAndRefusesANewerSchema(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	all := store.Migrations()

	var wg sync.WaitGroup
	ran := make([][]int, 3)
	errs := make([]error, 3)
	for i := range ran {
		wg.Add(1)
		go func() { defer wg.Done(); ran[i], errs[i] = store.Up(ctx, pool, schema) }()
	}
	wg.Wait()
	total := 0
	for i := range ran {
		require.NoError(t, errs[i])
		total += len(ran[i])
	}
	require.Equal(t, len(all), total, "three instances starting together apply each migration once")

	states, err := store.Status(ctx, pool, schema)
	require.NoError(t, err)
	require.Len(t, states, len(all))
	for _, s := range states {
		require.NotNil(t, s.AppliedAt, s.Name)
	}
	// The tables are there, with the columns the latest migrations add.
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
		WHERE table_schema = $1 AND (table_name, column_name) IN (('aggregates', 'recent'), ('parked', 'holds'), ('effect_starts', 'horizon'), ('offsets', 'next_offset'))`,
		schema).Scan(&n))
	require.Equal(t, 4, n)

	q := pgx.Identifier{schema}.Sanitize()
	_, err = pool.Exec(ctx, `INSERT INTO `+q+`.schema_migrations (version, name) VALUES (9999, 'from_the_future')`)
	require.NoError(t, err)
	_, err = store.Up(ctx, pool, schema)
	require.True(t, errors.Is(err, store.ErrNewerSchema), "got %v", err)
	require.ErrorContains(t, err, "migration 9999")
	states, err = store.Status(ctx, pool, schema)
	require.NoError(t, err)
	require.True(t, states[len(states)-1].Unknown)
}

// A database whose tables were made before numbered migrations existed is adopted:
// the baseline finds its tables, the later migrations alter them.
func TestUpAdoptsTablesMadeBeforeMigrations(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	q := pgx.Identifier{schema}.Sanitize()
	_, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+q+`;
		CREATE TABLE `+q+`.aggregates (projection text NOT NULL, version int NOT NULL, subject text NOT NULL,
			last_sequence bigint NOT NULL, last_event_id text NOT NULL, PRIMARY KEY (projection, version, subject));
		INSERT INTO `+q+`.aggregates VALUES ('p', 1, 's', 7, 'e7')`)
	require.NoError(t, err)
	ran, err := store.Up(ctx, pool, schema)
	require.NoError(t, err)
	require.Len(t, ran, len(store.Migrations()))
	var recent []byte
	require.NoError(t, pool.QueryRow(ctx, `SELECT recent FROM `+q+`.aggregates WHERE subject = 's'`).Scan(&recent))
	require.Empty(t, recent)
}

func TestStatusOfAnEmptyDatabaseIsAllPending(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	states, err := store.Status(context.Background(), pool, "never_made_schema_x")
	require.NoError(t, err)
	for _, s := range states {
		require.Nil(t, s.AppliedAt)
	}
}
