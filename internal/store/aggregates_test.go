package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/internal/testenv"
)

// now runs each queued query at once on one connection.
type now struct {
	ctx  context.Context
	conn *pgxpool.Conn
	err  error
}

func (q *now) QueueQuery(fn func(pgx.Rows) error, sql string, args ...any) {
	rows, err := q.conn.Query(q.ctx, sql, args...)
	if err == nil {
		err = fn(rows)
		rows.Close()
	}
	if q.err == nil {
		q.err = err
	}
}

// A batch's mark lookups probe the primary key once per key, with or without
// statistics: a new service's tables have none for their first second, and a second
// version of a projection has rows the statistics of the first version's say are
// not there. Counted by the index entries PostgreSQL read: 4 for the 4 keys found
// (a key not there reads none); lookups that read every mark and id of the version
// and filtered them (what `= ANY` was planned as in both cases) read 40,000.
func TestMarkLookupsProbeEachKeyWhateverTheStatistics(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	_, err := store.Up(ctx, pool, schema)
	require.NoError(t, err)
	q := pgx.Identifier{schema}.Sanitize()
	const marks = 20000
	fill := func(version int) {
		_, err := pool.Exec(ctx, fmt.Sprintf(`
			INSERT INTO %[1]s.aggregates (projection, version, subject, last_sequence, last_event_id)
			SELECT 'users', %[2]d, 'user-' || i, i, 'e-' || i FROM generate_series(1, %[3]d) i;
			INSERT INTO %[1]s.event_ids (projection, version, event_id)
			SELECT 'users', %[2]d, 'e-' || i FROM generate_series(1, %[3]d) i`, q, version, marks))
		require.NoError(t, err)
	}
	// Autovacuum would analyze the tables at its own moment: kept away.
	_, err = pool.Exec(ctx, `ALTER TABLE `+q+`.aggregates SET (autovacuum_enabled = off);
		ALTER TABLE `+q+`.event_ids SET (autovacuum_enabled = off)`)
	require.NoError(t, err)

	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	// read is how many index entries the lookups of version read, and what they found.
	read := func(version int) (int64, map[string]int64, map[string]bool) {
		// Each query is a transaction of its own: it reads the statistics afresh.
		counted := func() (n int64) {
			require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(sum(idx_tup_read), 0)
				FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname IN ('aggregates', 'event_ids')`, schema).Scan(&n))
			return n
		}
		before := counted()
		seqs, seen := map[string]int64{}, map[string]bool{}
		lookup := &now{ctx: ctx, conn: conn}
		store.QueueLoadAggregates(lookup, schema, "users", version, []string{"user-7", "user-19999", "user-none"},
			func(s string, seq int64, _ string, _ []byte) { seqs[s] = seq })
		store.QueueLoadEventIDs(lookup, schema, "users", version, []string{"e-3", "e-20000", "e-none"}, func(id string) { seen[id] = true })
		require.NoError(t, lookup.err)
		// The backend's counts are written out when it next goes idle, before it
		// answers this.
		_, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		require.NoError(t, err)
		return counted() - before, seqs, seen
	}

	fill(1) // never analyzed
	n, seqs, seen := read(1)
	require.Equal(t, map[string]int64{"user-7": 7, "user-19999": 19999}, seqs)
	require.Equal(t, map[string]bool{"e-3": true, "e-20000": true}, seen)
	require.Equal(t, int64(4), n, "the lookups without statistics read %d index entries for the 4 keys found", n)

	_, err = pool.Exec(ctx, `ANALYZE `+q+`.aggregates; ANALYZE `+q+`.event_ids`)
	require.NoError(t, err)
	fill(2) // a second version, which the statistics do not know
	n, seqs, seen = read(2)
	require.Equal(t, map[string]int64{"user-7": 7, "user-19999": 19999}, seqs)
	require.Equal(t, map[string]bool{"e-3": true, "e-20000": true}, seen)
	require.Equal(t, int64(4), n, "the lookups of a version the statistics do not know read %d index entries for the 4 keys found", n)
}
