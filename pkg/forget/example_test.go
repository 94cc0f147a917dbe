package forget_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/forget"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// After restoring a snapshot, purge what the read model still holds of forgotten
// subjects: Purge runs the projection's SubjectForgotten handler for each.
// It needs PostgreSQL, so this example is compiled but not run.
func ExamplePurge() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost:5432/readmodels")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	master, err := shred.ParseMasterKey(os.Getenv(shred.MasterKeyEnv))
	if err != nil {
		panic(err)
	}
	keys, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{})
	if err != nil {
		panic(err)
	}
	reg := events.NewRegistry()
	shred.Register(reg)
	p, err := readmodel.New("users", 1, reg) // with its other migrations and handlers
	if err != nil {
		panic(err)
	}
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v shred.SubjectForgotten) error {
		w.Exec(`DELETE FROM users WHERE user_id = $1`, v.SubjectID)
		return nil
	})
	n, err := forget.Purge(ctx, pool, p, keys, time.Time{}) // zero: every subject ever forgotten
	if err != nil {
		panic(err)
	}
	fmt.Println("purged", n, "subjects")
}
