package offsets_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

// A Key names one partition of one projection version: the read model's position,
// or, with Effect set, that effect's watermark.
func ExampleKey() {
	rm := offsets.Key{Projection: "orders", Version: 2, Topic: "orders", Partition: 3}
	fx := rm
	fx.Effect = "receipt"
	fmt.Println(rm)
	fmt.Println(fx)
	// Output:
	// orders_v2/orders/3
	// orders_v2 effect receipt/orders/3
}

// Read where a projection version stands on each partition. It needs PostgreSQL,
// so this example is compiled but not run.
func ExampleStore_List() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost:5432/readmodels")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	st := offsets.NewStore(readmodel.FrameworkSchemaDefault)
	ps, err := st.List(ctx, pool, "orders", 2)
	if err != nil {
		panic(err)
	}
	for _, p := range ps {
		fmt.Printf("%s: next offset %d\n", p.Key, p.Next)
	}
}
