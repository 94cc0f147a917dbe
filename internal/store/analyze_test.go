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
// schemas is analyzed (a restore's); with one, only a table that holds it plus
// twice the rows of its last analysis (the runner's loop): one that grew, not one
// whose rows were updated in place.
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

	// counted waits for the statistics to count n changes of table n since its analysis.
	counted := func(table string, n int64) {
		testenv.WaitFor(t, 30*time.Second, "the statistics to count the changes", func() bool {
			var got int64
			require.NoError(t, pool.QueryRow(ctx, `SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = $1::regclass`, tbl(table)).Scan(&got))
			return got >= n
		})
	}
	_, err = pool.Exec(ctx, `INSERT INTO `+tbl("grown")+` SELECT generate_series(101, 3100)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO `+tbl("quiet")+` SELECT generate_series(101, 110)`)
	require.NoError(t, err)
	counted("grown", 3000)
	counted("quiet", 10)
	got, err = store.Analyze(ctx, pool, []string{schema}, 1000, 1)
	require.NoError(t, err)
	require.Equal(t, []string{name("grown")}, got, "3,100 rows reach 1,000 + twice 100; 110 do not")
	require.EqualValues(t, 3100, tuples("grown"))
	require.EqualValues(t, 100, tuples("quiet"))

	// 4,000 rows more on 3,100: autovacuum's business (a tenth), not the loop's, which
	// waits for a table to more than double. Nor 30 updates of every row of quiet
	// (3,300 changes of 110 rows): it did not grow.
	_, err = pool.Exec(ctx, `INSERT INTO `+tbl("grown")+` SELECT generate_series(3101, 7100)`)
	require.NoError(t, err)
	for range 30 {
		_, err = pool.Exec(ctx, `UPDATE `+tbl("quiet")+` SET k = k`)
		require.NoError(t, err)
	}
	counted("grown", 4000)
	counted("quiet", 3300)
	got, err = store.Analyze(ctx, pool, []string{schema}, 1000, 1)
	require.NoError(t, err)
	require.Empty(t, got, "7,100 rows do not reach 1,000 + twice 3,100; 3,300 updates of 110 rows are not growth")
	require.EqualValues(t, 3100, tuples("grown"))
}
