package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// lookupStatisticsTarget is the statistics target of Analyze's column analyses,
// and of a restore's staging tables (Restore.Finish): a tenth of PostgreSQL's
// default (a sample of 3,000 rows, not 30,000).
const lookupStatisticsTarget = 10

// Analyze refreshes the planner's statistics of the tables in schemas that grew:
// that hold at least minChanged rows more than twice the rows of their last
// analysis (minChanged 0: every table, a restore's). Tables filled in bulk (a
// restore) or from empty (a replay, a new service's first events) otherwise keep an
// empty table's statistics until autovacuum comes by, and the plans cached for the
// batches' statements scan them whole.
//
// Doubled, not autovacuum's tenth: a plan goes wrong when a table's statistics are
// off by multiples (an empty table's, a table's from before a replay filled it),
// and autovacuum keeps the finer refresh anyway. At a tenth, a bootstrap's catch-up
// of a tenth of the log analyzed its largest table again, 0.6 s of CPU on two cores
// beside a 4.5 s catch-up. Growth, not changes: a table whose rows are updated in
// place (the sequence marks, a table of counters) was analyzed every few seconds by
// a runner looking every second, and each analysis makes every connection plan its
// cached statements on it again.
//
// Only what the runtime's own statements plan on is analyzed: each table's rows and
// pages, and a coarse analysis (lookupStatisticsTarget) of the columns of its
// indexes, which the batches' lookups probe. The rest is autovacuum's: an
// ANALYZE with a column list does not reset the table's count of changes since its
// last analysis (PostgreSQL resets it only when every column was analyzed), so
// autovacuum still analyzes the table whole, at the default target, at its next
// look. On the bootstrap's 97 MB snapshot: 0.46 s for the articles' key columns at
// the default target, 0.73-0.81 s for the whole table, 0.06 s at a tenth. A table is
// analyzed whole, at the default target, where a column list would leave something
// undone: when autovacuum is off (for the server or the table), and so would never
// finish the analysis; when the table has no index; and when it has an expression
// or partial index or extended statistics (CREATE STATISTICS), which an ANALYZE
// with a column list skips.
//
// Up to atOnce tables are analyzed at once, each on a connection of its own when db
// is a pool (a restore's, which waits for them; the runner's loop, which runs
// beside the folds, analyzes one at a time). It returns the tables analyzed and
// their errors, each naming its table.
func Analyze(ctx context.Context, db interface {
	Querier
	Execer
}, schemas []string, minChanged int64, atOnce int) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname),
			CASE WHEN NOT current_setting('autovacuum')::bool
				OR EXISTS (SELECT FROM pg_options_to_table(c.reloptions) o
					WHERE o.option_name = 'autovacuum_enabled' AND NOT o.option_value::bool)
				OR bool_or(i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
				OR EXISTS (SELECT FROM pg_statistic_ext x WHERE x.stxrelid = c.oid)
			THEN '' ELSE coalesce(string_agg(DISTINCT quote_ident(a.attname), ', '), '') END
		FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_index i ON i.indrelid = c.oid
		LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND a.attnum = ANY(i.indkey)
		WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')
			AND ($2::bigint = 0 OR s.n_live_tup >= $2::bigint + 2 * greatest(c.reltuples, 0)::bigint)
		GROUP BY 1, c.oid, c.reloptions ORDER BY 1`, schemas, minChanged)
	if err != nil {
		return nil, fmt.Errorf("tables to analyze: %w", err)
	}
	type table struct{ name, columns string }
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		return t, r.Scan(&t.name, &t.columns)
	})
	if err != nil {
		return nil, fmt.Errorf("tables to analyze: %w", err)
	}
	names := make([]string, len(tables))
	errs := make([]error, len(tables))
	slots := make(chan struct{}, max(atOnce, 1))
	var wg sync.WaitGroup
	for i, t := range tables {
		names[i] = t.name
		// One simple-protocol query string is one implicit transaction: SET LOCAL
		// holds for its ANALYZE only.
		q := "ANALYZE " + t.name
		if t.columns != "" {
			q = fmt.Sprintf("SET LOCAL default_statistics_target = %d; ANALYZE %s (%s)", lookupStatisticsTarget, t.name, t.columns)
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if _, err := db.Exec(ctx, q); err != nil {
				errs[i] = fmt.Errorf("analyze %s: %w", t.name, err)
			}
		})
	}
	wg.Wait()
	return names, errors.Join(errs...)
}
