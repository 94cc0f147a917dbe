package projector

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/testenv"
)

// TestABatchTransactionOpensBeforeItsFirstStatement: whatever goes through a batch
// transaction first — a pgx batch, Exec, Query, QueryRow, CopyFrom — runs after its
// BEGIN and SET LOCAL search_path, and a rollback takes its write back. Exec, Query
// and CopyFrom send the opening alone first, so an unqualified name finds the
// schema's table. A first pgx batch carries the opening with its own statements,
// which pgx prepares before any of them runs: an unqualified name there fails on a
// fresh connection, which is why the runtime's loads name their schema (readmodel's
// loadsIn). A transaction that sent nothing rolls back without a round trip and
// gives its connection back.
func TestABatchTransactionOpensBeforeItsFirstStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testenv.Database(t)
	_, err := pool.Exec(ctx, `CREATE SCHEMA opened; CREATE TABLE opened.things (n int NOT NULL)`)
	require.NoError(t, err)
	begin := []string{`BEGIN`, `SET LOCAL search_path TO opened, public`}
	first := map[string]func(tx *batchTx) error{
		"batch": func(tx *batchTx) error {
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO opened.things VALUES (1)`)
			return tx.SendBatch(ctx, b).Close()
		},
		"exec": func(tx *batchTx) error {
			_, err := tx.Exec(ctx, `INSERT INTO things VALUES (1)`)
			return err
		},
		"query": func(tx *batchTx) error {
			rows, err := tx.Query(ctx, `INSERT INTO things VALUES (1) RETURNING n`)
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		},
		"query row": func(tx *batchTx) error {
			var n int
			return tx.QueryRow(ctx, `INSERT INTO things VALUES (1) RETURNING n`).Scan(&n)
		},
		"copy": func(tx *batchTx) error {
			_, err := tx.CopyFrom(ctx, pgx.Identifier{"things"}, []string{"n"}, pgx.CopyFromRows([][]any{{1}}))
			return err
		},
	}
	inTx := func(name string, fn func(tx *batchTx)) {
		c, err := pool.Acquire(ctx)
		require.NoError(t, err)
		tx := &batchTx{conn: c, begin: begin}
		defer func() { require.NoError(t, tx.Rollback(ctx), name) }()
		fn(tx)
	}
	for name, fn := range first {
		inTx(name, func(tx *batchTx) {
			require.NoError(t, fn(tx), name)
			require.Equal(t, byte('T'), tx.Conn().PgConn().TxStatus(), "%s: runs in the transaction", name)
			var path string
			require.NoError(t, tx.QueryRow(ctx, `SHOW search_path`).Scan(&path))
			require.Equal(t, "opened, public", path, name)
		})
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM opened.things`).Scan(&n))
		require.Zero(t, n, "%s: the rollback took the write back", name)
	}

	inTx("unqualified in the first batch", func(tx *batchTx) {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO things VALUES (2)`)
		err := tx.SendBatch(ctx, b).Close()
		var pe *pgconn.PgError
		require.ErrorAs(t, err, &pe, "prepared before the SET LOCAL ran")
		require.Equal(t, "42P01", pe.Code, "undefined table")
	})

	c, err := pool.Acquire(ctx)
	require.NoError(t, err)
	tx := &batchTx{conn: c, begin: begin}
	require.NoError(t, tx.Rollback(ctx), "a transaction that sent nothing")
	require.Nil(t, tx.conn, "its connection went back to the pool")
	require.Zero(t, pool.Stat().AcquiredConns())
}
