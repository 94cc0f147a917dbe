package main

import (
	"context"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// tutorial:begin projection
// NewProjection is the read model: customers, with how many orders they placed, and
// orders. Its tables live in schema NAME_vVERSION; a new version builds beside the
// serving one. Every handler's writes for a batch commit in one transaction, with
// the batch's offsets.
func NewProjection(name string, version int) (*readmodel.Projection, error) {
	p, err := readmodel.New(name, version, Registry())
	if err != nil {
		return nil, err
	}
	p.Migrate(
		`CREATE TABLE customers (
			customer_id text PRIMARY KEY,
			name        text NOT NULL,
			email       text NOT NULL,
			address     text NOT NULL,
			orders      int NOT NULL DEFAULT 0)`,
		`CREATE TABLE orders (
			order_id    text PRIMARY KEY,
			customer_id text NOT NULL,
			item        text NOT NULL,
			cents       bigint NOT NULL,
			placed_at   timestamptz NOT NULL,
			shipped_at  timestamptz,
			carrier     text)`,
	)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v CustomerRegistered) error {
		w.Exec(`INSERT INTO customers (customer_id, name, email, address) VALUES ($1, $2, $3, $4)`,
			v.CustomerID, v.Name, v.Email, v.Address)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v CustomerMoved) error {
		w.Exec(`UPDATE customers SET address = $2 WHERE customer_id = $1`, v.CustomerID, v.Address)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v OrderPlaced) error {
		w.Exec(`INSERT INTO orders (order_id, customer_id, item, cents, placed_at) VALUES ($1, $2, $3, $4, $5)`,
			v.OrderID, v.CustomerID, v.Item, v.Cents, e.Time)
		w.Exec(`UPDATE customers SET orders = orders + 1 WHERE customer_id = $1`, v.CustomerID)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v OrderShipped) error {
		w.Exec(`UPDATE orders SET shipped_at = $2, carrier = $3 WHERE order_id = $1`, v.OrderID, e.Time, v.Carrier)
		return nil
	})
	return p, nil
}

// tutorial:end projection
