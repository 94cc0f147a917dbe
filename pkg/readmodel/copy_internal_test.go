package readmodel

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
)

type copyNote struct {
	ID   int64  `db:"id"`
	Body string `db:"body"`
}

// Rows of mixed sizes are cut into COPY statements of at most copyWriteMax bytes:
// a row that would not fit starts the next statement, and a row larger than the
// limit goes alone. Every row is in exactly one statement, in order.
func TestCopyStatementsStayWithinTheirBound(t *testing.T) {
	proj, err := New("copycut", 1, events.NewRegistry())
	require.NoError(t, err)
	tb := NewTable[int64, copyNote](proj, "notes", "id")
	var rows []copyNote
	for i := range 1300 {
		rows = append(rows, copyNote{ID: int64(i), Body: strings.Repeat("a", 30)})
	}
	rows = append(rows, copyNote{ID: 5000, Body: strings.Repeat("b", 60000)})
	rows = append(rows, copyNote{ID: 5001, Body: strings.Repeat("c", 100000)})
	for i := range 10 {
		rows = append(rows, copyNote{ID: int64(6000 + i), Body: "d"})
	}
	writes, err := encodeCopy(pgtype.NewMap(), tb, []uint32{pgtype.Int8OID, pgtype.TextOID}, "COPY notes (id, body) FROM STDIN (FORMAT binary)", rows)
	require.NoError(t, err)
	seen := 0
	for i, w := range writes {
		require.True(t, bytes.HasPrefix(w, []byte{'Q'}) && bytes.HasSuffix(w, []byte{'c', 0, 0, 0, 4}), "write %d is one whole statement", i)
		n := bytes.Count(w, []byte{0, 2, 0, 0, 0, 8}) // a row: 2 fields, then the id's 8 bytes
		require.Positive(t, n, "write %d holds rows", i)
		if len(w) > copyWriteMax {
			require.Equal(t, 1, n, "write %d, %d bytes, is over the bound with more than one row", i, len(w))
		}
		seen += n
	}
	require.Equal(t, len(rows), seen)
	require.GreaterOrEqual(t, len(writes), 4, "the 60 KB row does not fit beside the small ones, and the 100 KB row goes alone")
}

type uuidNote struct {
	ID   string `db:"id" pgtype:"uuid"`
	Body string `db:"body"`
}

// A field whose Go type has no binary encoding for its column's type (a string in
// a uuid column, as NewTable's documentation shows) is read as the type's text
// form and encoded, as pgx's CopyFrom does: such a table keeps COPY.
func TestCopyEncodesAStringForAUUIDColumn(t *testing.T) {
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE notes (id uuid PRIMARY KEY, body text NOT NULL)`)
	require.NoError(t, err)
	proj, err := New("copyuuid", 1, events.NewRegistry())
	require.NoError(t, err)
	tb := NewTable[string, uuidNote](proj, "notes", "id")
	b := &pgx.Batch{}
	tb.queueFitCheck(b, schema)
	require.NoError(t, pool.SendBatch(ctx, b).Close())
	fit := tb.fitIn(schema)
	require.True(t, fit.copy, "the fit check passes: %+v", fit)
	rows := []uuidNote{{ID: "7e1b6c4e-1d2f-4a7b-9c1e-0a1b2c3d4e5f", Body: "x"}, {ID: "00000000-0000-4000-8000-000000000001", Body: "y"}}
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		n, err := copyRows(ctx, tx, tb, pgx.Identifier{schema, "notes"}, fit.oids, rows)
		require.EqualValues(t, 2, n)
		return err
	}))
	var got []string
	r, err := pool.Query(ctx, `SELECT id::text || '=' || body FROM notes ORDER BY body`)
	require.NoError(t, err)
	got, err = pgx.CollectRows(r, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"7e1b6c4e-1d2f-4a7b-9c1e-0a1b2c3d4e5f=x", "00000000-0000-4000-8000-000000000001=y"}, got)
}
