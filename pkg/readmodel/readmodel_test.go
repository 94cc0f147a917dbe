package readmodel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

func TestIsTransient(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"marked transient", readmodel.Transient(errors.New("later")), true},
		{"read-only transaction", pg("25006"), true},
		{"disk full", pg("53100"), true},
		{"too many connections", pg("53300"), true},
		{"admin shutdown", pg("57P01"), true},
		{"cannot connect now", pg("57P03"), true},
		{"serialization failure", fmt.Errorf("wrapped: %w", pg("40001")), true},
		{"deadlock", pg("40P01"), true},
		{"idle in transaction timeout", pg("25P03"), true},
		{"connection failure", pg("08006"), true},
		{"statement timeout", pg("57014"), true},
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"deadline", context.DeadlineExceeded, true},
		{"unique violation", pg("23505"), false},
		{"raised exception", pg("P0001"), false},
		{"syntax error", pg("42601"), false},
		{"undefined table", pg("42P01"), false},
		{"handler's own error", errors.New("bad data"), false},
	}
	for _, tt := range tests {
		if got := readmodel.IsTransient(tt.err); got != tt.want {
			t.Errorf("%s: IsTransient = %v, want %v", tt.name, got, tt.want)
		}
	}
}

type thing struct{ N int }

func TestProjectionValidation(t *testing.T) {
	t.Parallel()
	reg := events.NewRegistry()
	events.Register[thing](reg, "Thing")
	for _, bad := range []string{"", "Users", "1users", "users-v1", strings.Repeat("a", 41)} {
		if _, err := readmodel.New(bad, 1, reg); err == nil || !strings.Contains(err.Error(), "name") {
			t.Errorf("name %q: err %v", bad, err)
		}
	}
	if _, err := readmodel.New("users", 0, reg); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("version 0: err %v", err)
	}
	p, err := readmodel.New("users", 2, reg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Schema() != "users_v2" {
		t.Fatalf("schema %q", p.Schema())
	}
	h1 := p.SchemaHash()
	p.Migrate("CREATE TABLE x (id int)")
	if p.SchemaHash() == h1 {
		t.Fatal("a migration did not change the schema hash")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Handle for an unregistered Go type did not panic")
		}
	}()
	readmodel.Handle(p, func(context.Context, *readmodel.Writer, events.Event, struct{ X int }) error { return nil })
}

func TestMigrationsRunOnceAndRefuseAnEditedStep(t *testing.T) {
	t.Parallel()
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	reg := events.NewRegistry()
	name := "mig" + strings.ReplaceAll(schema[len(schema)-10:], "_", "")
	mk := func(steps ...string) *readmodel.Projection {
		p, err := readmodel.New(name, 1, reg)
		if err != nil {
			t.Fatal(err)
		}
		p.Migrate(steps...)
		return p
	}
	t.Cleanup(func() { _, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+"_v1 CASCADE") })
	if err := readmodel.Setup(ctx, pool, schema, mk("CREATE TABLE a (id int)")); err != nil {
		t.Fatal(err)
	}
	// Again, plus a step: the first is not rerun (it would fail: the table exists).
	if err := readmodel.Setup(ctx, pool, schema, mk("CREATE TABLE a (id int)", "CREATE TABLE b (id int)")); err != nil {
		t.Fatal(err)
	}
	err := readmodel.Setup(ctx, pool, schema, mk("CREATE TABLE a (id bigint)", "CREATE TABLE b (id int)"))
	if err == nil || !strings.Contains(err.Error(), "step 0 changed") {
		t.Fatalf("edited step: err = %v", err)
	}
}

// QueueQuery sends nothing by itself: the query goes with the next round trip, after
// the statements queued before it, and its rows reach fn once that is sent.
func TestQueueQueryReadsWithTheNextSend(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE queued (n int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	w.Exec(`INSERT INTO queued VALUES (1), (2)`)
	var got []int
	w.QueueQuery(func(rows pgx.Rows) error {
		for rows.Next() {
			var n int
			if err := rows.Scan(&n); err != nil {
				return err
			}
			got = append(got, n)
		}
		return rows.Err()
	}, `SELECT n FROM queued ORDER BY n`)
	if w.Pending() != 2 || got != nil {
		t.Fatalf("before the send: %d pending, read %v; want 2 pending and nothing read", w.Pending(), got)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[1 2]" || w.Pending() != 0 {
		t.Fatalf("after the send: read %v, %d pending; want [1 2] and none", got, w.Pending())
	}
	w.QueueQuery(func(pgx.Rows) error { return errors.New("refused") }, `SELECT 1`)
	if err := w.Flush(ctx); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("fn's error: Flush returned %v", err)
	}
}
