package store_test

import (
	"context"
	"maps"
	"slices"
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

// TestAnalyzeLeavesTheWholeAnalysisToAutovacuum: a restore's tables get
// their rows and a coarse analysis of their index columns, and keep their count of
// changes, so that autovacuum still analyzes them whole; a table without an index,
// with an expression index, or that autovacuum skips, is analyzed whole.
func TestAnalyzeLeavesTheWholeAnalysisToAutovacuum(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	tbl := func(n string) string { return pgx.Identifier{schema, n}.Sanitize() }
	// Autovacuum would analyze these tables on its own within the minute, and with it
	// every column: a threshold out of reach keeps it away, with autovacuum still on.
	const away = ` WITH (autovacuum_analyze_threshold = 2000000000)`
	for _, q := range []string{
		`CREATE TABLE ` + tbl("keyed") + ` (k int PRIMARY KEY, g int NOT NULL, body text NOT NULL)` + away,
		`CREATE INDEX ON ` + tbl("keyed") + ` (g)`,
		`CREATE TABLE ` + tbl("heap") + ` (a int, b text)` + away,
		`CREATE TABLE ` + tbl("expr") + ` (k int PRIMARY KEY, b text)` + away,
		`CREATE INDEX ON ` + tbl("expr") + ` (lower(b))`,
		`CREATE TABLE ` + tbl("skipped") + ` (k int PRIMARY KEY, b text) WITH (autovacuum_enabled = off)`,
		`INSERT INTO ` + tbl("keyed") + ` SELECT i, i % 50, repeat('x', i % 200) FROM generate_series(1, 5000) i`,
		`INSERT INTO ` + tbl("heap") + ` SELECT i, 'b' FROM generate_series(1, 500) i`,
		`INSERT INTO ` + tbl("expr") + ` SELECT i, 'B' || i FROM generate_series(1, 500) i`,
		`INSERT INTO ` + tbl("skipped") + ` SELECT i, 'b' FROM generate_series(1, 500) i`,
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	changes := func(n string) int64 {
		var got int64
		require.NoError(t, pool.QueryRow(ctx, `SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = $1::regclass`, tbl(n)).Scan(&got))
		return got
	}
	testenv.WaitFor(t, 30*time.Second, "the statistics to count the inserts", func() bool {
		return changes("keyed") >= 5000 && changes("heap") >= 500 && changes("expr") >= 500 && changes("skipped") >= 500
	})

	got, err := store.Analyze(ctx, pool, []string{schema}, 0, 2)
	require.NoError(t, err)
	require.Equal(t, []string{schema + ".expr", schema + ".heap", schema + ".keyed", schema + ".skipped"}, got)
	var tuples float64
	require.NoError(t, pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = $1::regclass`, tbl("keyed")).Scan(&tuples))
	require.EqualValues(t, 5000, tuples)
	// analyzed returns, by column of table with statistics, its histogram's bounds.
	analyzed := func(table string) map[string]int {
		m := map[string]int{}
		require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(jsonb_object_agg(attname, coalesce(array_length(histogram_bounds::text::text[], 1), 0)), '{}')
			FROM pg_stats WHERE schemaname = $1 AND tablename = $2`, schema, table).Scan(&m))
		return m
	}
	keyed := analyzed("keyed")
	require.ElementsMatch(t, []string{"k", "g"}, slices.Collect(maps.Keys(keyed)), "the index columns only")
	require.Equal(t, 11, keyed["k"], "a coarse histogram: 10 buckets, not the default 100")
	require.GreaterOrEqual(t, changes("keyed"), int64(5000), "the changes are left for autovacuum's whole analysis")
	for _, whole := range []string{"heap", "expr", "skipped"} {
		require.Len(t, analyzed(whole), 2, "%s: analyzed whole", whole)
		require.Zero(t, changes(whole), "%s: analyzed whole", whole)
	}
	var exprStats int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stats WHERE schemaname = $1 AND tablename LIKE 'expr_lower_idx%'`, schema).Scan(&exprStats))
	require.Equal(t, 1, exprStats, "the expression index's statistics")
}
