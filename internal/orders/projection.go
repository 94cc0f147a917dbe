package orders

import (
	"context"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// NewProjection returns the shared-rows read model: orders, and per customer the
// number of open orders and their total. Its handlers write statement by statement
// with Writer.Exec; a customer's row is updated by orders in every partition.
func NewProjection(name string, version int) (*readmodel.Projection, error) {
	p, err := readmodel.New(name, version, Registry())
	if err != nil {
		return nil, err
	}
	migrate(p)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v OrderPlaced) error {
		w.Exec(`INSERT INTO orders (order_id, customer_id, amount_cents, placed_at) VALUES ($1, $2, $3, $4)`,
			v.OrderID, v.CustomerID, v.AmountCents, e.Time)
		w.Exec(`INSERT INTO customers (customer_id, orders, total_cents) VALUES ($1, 1, $2)
			ON CONFLICT (customer_id) DO UPDATE SET orders = customers.orders + 1, total_cents = customers.total_cents + EXCLUDED.total_cents`,
			v.CustomerID, v.AmountCents)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v OrderAmended) error {
		w.Exec(`WITH o AS (SELECT amount_cents FROM orders WHERE order_id = $1 AND NOT cancelled)
			UPDATE customers SET total_cents = total_cents + $3 - o.amount_cents FROM o WHERE customer_id = $2`,
			v.OrderID, v.CustomerID, v.AmountCents)
		w.Exec(`UPDATE orders SET amount_cents = $2 WHERE order_id = $1 AND NOT cancelled`, v.OrderID, v.AmountCents)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v OrderCancelled) error {
		w.Exec(`WITH o AS (UPDATE orders SET cancelled = true WHERE order_id = $1 AND NOT cancelled RETURNING customer_id, amount_cents)
			UPDATE customers c SET orders = c.orders - 1, total_cents = c.total_cents - o.amount_cents FROM o WHERE c.customer_id = o.customer_id`,
			v.OrderID)
		return nil
	})
	return p, nil
}

// migrate creates the read model's tables: the same for both versions of the handlers.
func migrate(p *readmodel.Projection) {
	p.Migrate(
		`CREATE TABLE orders (
			order_id     text PRIMARY KEY,
			customer_id  text NOT NULL,
			amount_cents bigint NOT NULL,
			cancelled    boolean NOT NULL DEFAULT false,
			placed_at    timestamptz NOT NULL)`,
		`CREATE TABLE customers (
			customer_id  text PRIMARY KEY,
			orders       int NOT NULL,
			total_cents  bigint NOT NULL)`,
	)
}
