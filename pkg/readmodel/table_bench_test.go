package readmodel_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

type benchRow struct {
	ID    string    `db:"id"`
	Owner string    `db:"owner"`
	Body  string    `db:"body"`
	At    time.Time `db:"at"`
	N     int       `db:"n"`
}

// BenchmarkTableWrite compares the two set-based ways to write a batch's rows, 1000
// rows of about 400 bytes, half new and half updated: the row API's unnest upsert
// (one statement), and COPY into a temporary table then INSERT … SELECT … ON
// CONFLICT (three statements, two round trips). Each reports rows/s.
func BenchmarkTableWrite(b *testing.B) {
	pool, _ := testenv.Postgres(b)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE t (id text PRIMARY KEY, owner text NOT NULL, body text NOT NULL, at timestamptz NOT NULL, n int NOT NULL)`)
	require.NoError(b, err)
	p, err := readmodel.New("bench", 1, events.NewRegistry())
	require.NoError(b, err)
	tbl := readmodel.NewTable[string, benchRow](p, "t", "id")
	const n = 1000
	body := strings.Repeat("lorem ipsum ", 35)
	rows := func(round int) []benchRow {
		out := make([]benchRow, n)
		for i := range out {
			// half the keys are the last round's, half new
			out[i] = benchRow{ID: fmt.Sprintf("r%07d", round*n/2+i), Owner: "o", Body: body, At: time.Now(), N: i}
		}
		return out
	}
	b.Run("unnest-upsert", func(b *testing.B) {
		round := 0
		for b.Loop() {
			round++
			start := time.Now()
			require.NoError(b, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				w := readmodel.NewWriter(tx)
				for _, r := range rows(round) {
					tbl.Put(w, r)
				}
				return w.Flush(ctx)
			}))
			b.ReportMetric(n/time.Since(start).Seconds(), "rows/s")
		}
	})
	b.Run("unnest-plain", func(b *testing.B) {
		round := 1 << 22
		for b.Loop() {
			round++
			start := time.Now()
			require.NoError(b, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				rs := rows(round)
				cols := [5][]any{}
				ids, owners, bodies, ats, ns := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n), make([]int, n)
				for i, r := range rs {
					ids[i], owners[i], bodies[i], ats[i], ns[i] = r.ID, r.Owner, r.Body, r.At, r.N
				}
				_ = cols
				_, err := tx.Exec(ctx, `INSERT INTO t SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])
					ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, body = EXCLUDED.body, at = EXCLUDED.at, n = EXCLUDED.n`,
					ids, owners, bodies, ats, ns)
				return err
			}))
			b.ReportMetric(n/time.Since(start).Seconds(), "rows/s")
		}
	})
	b.Run("copy-then-merge", func(b *testing.B) {
		round := 1 << 20
		for b.Loop() {
			round++
			start := time.Now()
			require.NoError(b, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `CREATE TEMP TABLE t_in (LIKE t) ON COMMIT DROP`); err != nil {
					return err
				}
				rs := rows(round)
				src := make([][]any, len(rs))
				for i, r := range rs {
					src[i] = []any{r.ID, r.Owner, r.Body, r.At, r.N}
				}
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{"t_in"}, []string{"id", "owner", "body", "at", "n"}, pgx.CopyFromRows(src)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO t SELECT * FROM t_in ORDER BY id ON CONFLICT (id) DO UPDATE
					SET owner = EXCLUDED.owner, body = EXCLUDED.body, at = EXCLUDED.at, n = EXCLUDED.n`)
				return err
			}))
			b.ReportMetric(n/time.Since(start).Seconds(), "rows/s")
		}
	})
}
