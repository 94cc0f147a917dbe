package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/internal/testenv"
)

// TestAnalyzeRefreshesTheTablesThatChanged: with no threshold every table of the
// schemas is analyzed (a restore's); with one, only a table whose changes since its
// last analysis reach it plus half its rows (the runner's loop).
func TestAnalyzeRefreshesTheTablesThatChanged(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	tbl := func(n string) string { return pgx.Identifier{schema, n}.Sanitize() }
	for _, n := range []string{"grown", "quiet"} {
		_, err := pool.Exec(ctx, `CREATE TABLE `+tbl(n)+` (k int PRIMARY KEY)`)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `INSERT INTO `+tbl(n)+` SELECT generate_series(1, 100)`)
		require.NoError(t, err)
	}
	tuples := func(n string) float64 {
		var r float64
		require.NoError(t, pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = $1::regclass`, tbl(n)).Scan(&r))
		return r
	}
	require.EqualValues(t, -1, tuples("grown"), "never analyzed")

	got, err := store.Analyze(ctx, pool, []string{schema}, 0, 2)
	require.NoError(t, err)
	name := func(n string) string { return schema + "." + n } // as format('%I.%I') spells it
	require.Equal(t, []string{name("grown"), name("quiet")}, got)
	require.EqualValues(t, 100, tuples("grown"))
	require.EqualValues(t, 100, tuples("quiet"))

	// counted waits for the statistics to count n changes of grown since its analysis.
	counted := func(n int64) {
		testenv.WaitFor(t, 30*time.Second, "the statistics to count the inserts", func() bool {
			var got int64
			require.NoError(t, pool.QueryRow(ctx, `SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = $1::regclass`, tbl("grown")).Scan(&got))
			return got >= n
		})
	}
	_, err = pool.Exec(ctx, `INSERT INTO `+tbl("grown")+` SELECT generate_series(101, 3100)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO `+tbl("quiet")+` SELECT generate_series(101, 110)`)
	require.NoError(t, err)
	counted(3000)
	got, err = store.Analyze(ctx, pool, []string{schema}, 1000, 1)
	require.NoError(t, err)
	require.Equal(t, []string{name("grown")}, got, "3,000 changes reach 1,000 + half of 3,100 rows; 10 do not")
	require.EqualValues(t, 3100, tuples("grown"))
	require.EqualValues(t, 100, tuples("quiet"))

	// 4,000 rows more on 3,100: autovacuum's business (a tenth), not the loop's, which
	// waits for a table to more than double (changes of half the rows it holds now).
	_, err = pool.Exec(ctx, `INSERT INTO `+tbl("grown")+` SELECT generate_series(3101, 7100)`)
	require.NoError(t, err)
	counted(4000)
	got, err = store.Analyze(ctx, pool, []string{schema}, 1000, 1)
	require.NoError(t, err)
	require.Empty(t, got, "4,000 changes reach 1,000 + a tenth of 7,100 rows, not 1,000 + half")
	require.EqualValues(t, 3100, tuples("grown"))
}
