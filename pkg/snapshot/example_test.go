package snapshot_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/snapshot"
)

// A FolderStore keeps snapshots in a folder, newest first; Prune keeps the newest
// few. (Take writes real ones from PostgreSQL; these are hand-made manifests.)
func ExampleFolderStore() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "snapshots")
	defer os.RemoveAll(dir)
	st := snapshot.FolderStore{Dir: dir}
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"a", "b", "c"} {
		m := &snapshot.Manifest{ID: id, Projection: "orders", Version: 1, CreatedAt: day.AddDate(0, 0, i)}
		if err := st.Write(ctx, m, func(func(string, func(io.Writer) error) error) error { return nil }); err != nil {
			panic(err)
		}
	}
	deleted, _ := snapshot.Prune(ctx, st, "orders", 1, 2)
	kept, _ := st.List(ctx, "orders", 1)
	fmt.Println("deleted", deleted)
	for _, m := range kept {
		fmt.Println("kept", m.ID, m.CreatedAt.Format(time.DateOnly))
	}
	// Output:
	// deleted [a]
	// kept c 2026-11-03
	// kept b 2026-11-02
}

// Take a snapshot of a projection version; a new instance, on its own database,
// restores the newest one instead of replaying the whole log. It needs PostgreSQL,
// so this example is compiled but not run.
func ExampleTake() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost:5432/readmodels")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	p, err := readmodel.New("orders", 1, events.NewRegistry()) // with its migrations and handlers
	if err != nil {
		panic(err)
	}
	st := snapshot.FolderStore{Dir: "/var/lib/projector/snapshots"}
	m, err := snapshot.Take(ctx, snapshot.Source{Pool: pool, Projection: p, Topic: "orders"}, st)
	if err != nil {
		panic(err)
	}
	fmt.Println("took", m.ID, "covering", m.Events, "events")

	// On the new instance (its own pool and projection):

	restored, err := snapshot.RestoreNewest(ctx, st, nil, snapshot.Target{Pool: pool, Projection: p, Topic: "orders"})
	if err != nil {
		panic(err)
	}
	fmt.Println("restored", restored.ID)
}
