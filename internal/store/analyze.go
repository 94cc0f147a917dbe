package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Analyze refreshes the planner's statistics of the tables in schemas that grew:
// that hold at least minChanged rows more than twice the rows of their last
// analysis (minChanged 0: every table), one ANALYZE each. Doubled, not autovacuum's
// tenth: a plan goes wrong when a table's statistics are off by multiples (an
// empty table's, a table's from before a replay filled it), and autovacuum keeps
// the finer refresh anyway. At a tenth, a bootstrap's catch-up of a tenth of the
// log analyzed its largest table again, 0.6 s of CPU on two cores beside a 4.5 s
// catch-up. Growth, not changes: a table whose rows are updated in place (the
// sequence marks, a table of counters) was analyzed every few seconds by a runner
// looking every second, and each analysis makes every connection plan its cached
// statements on it again.
//
// Up to atOnce tables are analyzed at once, each on a connection of its own when db
// is a pool (a restore's, which waits for them; the runner's loop, which runs
// beside the folds, analyzes one at a time). It returns the tables analyzed and
// their errors, each naming its table. Tables filled in bulk (a restore) or from
// empty (a replay, a new service's first events) otherwise keep an empty table's
// statistics until autovacuum comes by, and the plans cached for the batches'
// statements scan them whole.
func Analyze(ctx context.Context, db interface {
	Querier
	Execer
}, schemas []string, minChanged int64, atOnce int) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT format('%I.%I', s.schemaname, s.relname) FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
		WHERE s.schemaname = ANY($1) AND ($2::bigint = 0 OR s.n_live_tup >= $2::bigint + 2 * greatest(c.reltuples, 0)::bigint)
		ORDER BY 1`, schemas, minChanged)
	if err != nil {
		return nil, fmt.Errorf("tables to analyze: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("tables to analyze: %w", err)
	}
	errs := make([]error, len(tables))
	if atOnce < 1 {
		atOnce = 1
	}
	slots := make(chan struct{}, atOnce)
	var wg sync.WaitGroup
	for i, t := range tables {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if _, err := db.Exec(ctx, "ANALYZE "+t); err != nil {
				errs[i] = fmt.Errorf("analyze %s: %w", t, err)
			}
		})
	}
	wg.Wait()
	return tables, errors.Join(errs...)
}
