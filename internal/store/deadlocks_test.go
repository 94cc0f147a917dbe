package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/internal/testenv"
)

// A deadlock is counted in the partition's stored position, and read back per
// partition for that projection version and topic only; a partition without a
// stored position is an error, not a count lost in silence.
func TestDeadlocksAreCountedWithThePosition(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	_, err := store.Up(ctx, pool, schema)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{schema, "offsets"}.Sanitize()+`
		(projection, version, topic, partition, next_offset, generation, member) VALUES
		('users', 1, 't', 0, 10, 1, 'm'), ('users', 1, 't', 1, 10, 1, 'm'), ('users', 2, 't', 0, 10, 1, 'm'), ('users', 1, 'u', 0, 10, 1, 'm')`)
	require.NoError(t, err)
	for range 2 {
		require.NoError(t, store.CountDeadlock(ctx, pool, schema, "users", 1, "t", 1))
	}
	require.NoError(t, store.CountDeadlock(ctx, pool, schema, "users", 2, "t", 0))
	got, err := store.Deadlocks(ctx, pool, schema, "users", 1, "t")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 0, 1: 2}, got)
	err = store.CountDeadlock(ctx, pool, schema, "users", 1, "t", 7)
	require.ErrorContains(t, err, "users v1 on t/7: no stored position")
}
