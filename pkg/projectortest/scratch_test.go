package projectortest_test

import (
	"context"
	"io"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/projectortest"
)

// Example needs PostgreSQL, so it has no Output comment; this runs it against the
// stack (skipped without one) and checks what it prints.
func TestExample(t *testing.T) {
	t.Setenv("DATABASE_URL", testenv.Get(t).DatabaseURL)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	func() {
		defer func() { os.Stdout = stdout }()
		Example()
	}()
	require.NoError(t, w.Close())
	out, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "cart-1 holds 3 tea\n", string(out))
}

// Pointed at a database that holds the projection's real read model, the harness
// works beside it, in scratch schemas, and Close drops only those.
func TestHarnessLeavesTheRealReadModelAlone(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	ctx := context.Background()
	name := testenv.UniqueName(t)
	p, err := domain.NewProjection("live"+name[len(name)-10:], 1)
	require.NoError(t, err)
	live := pgx.Identifier{p.Schema()}.Sanitize()
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+live+" CASCADE") })
	_, err = pool.Exec(ctx, "CREATE SCHEMA "+live+"; CREATE TABLE "+live+".users (user_id text PRIMARY KEY); INSERT INTO "+live+".users VALUES ('live-user')")
	require.NoError(t, err)

	h, err := projectortest.Open(ctx, pool, p)
	require.NoError(t, err)
	require.NotEqual(t, p.Schema(), h.Schema())
	reg := domain.Registry()
	e, err := reg.New("t", "u1", domain.UserRegistered{UserID: "u1", Email: "u1@example.test", Name: "Ada"})
	require.NoError(t, err)
	require.NoError(t, h.Apply(ctx, e))
	rows, err := h.DB().Query(ctx, `SELECT user_id FROM users`)
	require.NoError(t, err)
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"u1"}, users, "the harness sees its own tables, not the live ones")
	require.NoError(t, h.Close(ctx))

	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+live+".users WHERE user_id = 'live-user'").Scan(&n))
	require.Equal(t, 1, n, "the live read model survives Close")
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ptest\\_' || $1 || '\\_%'", p.Schema()).Scan(&n))
	require.Zero(t, n, "Close drops the scratch schemas")
}
