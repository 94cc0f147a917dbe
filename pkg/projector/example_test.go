package projector_test

import (
	"context"
	"os"
	"os/signal"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

type orderWasPlaced struct {
	OrderID string `json:"order_id"`
	Total   int64  `json:"total_cents"`
}

// Build a projection, then run it: the runner joins the Kafka group, applies each
// batch of events in one PostgreSQL transaction with the partition's position,
// and stops cleanly when ctx ends. It needs Kafka and PostgreSQL, so this example
// is compiled but not run.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	reg := events.NewRegistry()
	events.Register[orderWasPlaced](reg, "OrderPlaced")
	p, err := readmodel.New("orders", 1, reg)
	if err != nil {
		panic(err)
	}
	p.Migrate(`CREATE TABLE orders (order_id text PRIMARY KEY, total_cents bigint NOT NULL)`)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v orderWasPlaced) error {
		w.Exec(`INSERT INTO orders VALUES ($1, $2) ON CONFLICT DO NOTHING`, v.OrderID, v.Total)
		return nil
	})
	pool, err := pgxpool.New(ctx, "postgres://localhost:5432/readmodels")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	r, err := projector.New(projector.Config{
		Brokers: []string{"localhost:9092"}, Topic: "orders", Projection: p, Pool: pool,
		Logger: zap.NewExample(),
	})
	if err != nil {
		panic(err)
	}
	if err := r.Run(ctx); err != nil {
		panic(err)
	}
}
