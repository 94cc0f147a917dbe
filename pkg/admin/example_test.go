package admin_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/readmodel"
)

// List the events a projection version parked (its handler failed on them), then
// ask the running instances to retry one aggregate's. It needs PostgreSQL, so this
// example is compiled but not run.
func ExampleDLQ() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost:5432/readmodels")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	dlq := admin.NewDLQ(pool, readmodel.FrameworkSchemaDefault, "orders", 1)
	parked, err := dlq.List(ctx, false)
	if err != nil {
		panic(err)
	}
	for _, e := range parked {
		fmt.Printf("%d %s %s@%d/%d: %s\n", e.ID, e.EventType, e.Topic, e.Partition, e.Offset, e.Error)
	}
	if len(parked) > 0 {
		n, err := dlq.RequestRetry(ctx, []string{parked[0].Subject})
		if err != nil {
			panic(err)
		}
		fmt.Println("retry requested for", n, "events")
	}
}
