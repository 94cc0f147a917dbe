package readmodel_test

import (
	"context"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

type OrderPlaced struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Amount   int    `json:"amount"`
}

type Customer struct {
	ID     string `db:"customer_id"`
	Total  int    `db:"total"`
	Orders int    `db:"orders"`
}

// A table declared once with its row type and primary key; a handler that reads a
// row, changes it and puts it back. The runtime loads the keys Loads names for a
// whole batch in one query, and writes the table once per batch, in key order.
func ExampleNewTable() {
	reg := events.NewRegistry()
	events.Register[OrderPlaced](reg, "OrderPlaced")
	p, _ := readmodel.New("shop", 1, reg)
	p.Migrate(`CREATE TABLE customers (customer_id text PRIMARY KEY, total int NOT NULL, orders int NOT NULL)`)
	customers := readmodel.NewTable[string, Customer](p, "customers", "customer_id")
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v OrderPlaced) error {
		c, _, err := customers.Get(ctx, w, v.Customer) // the zero row when absent
		if err != nil {
			return err
		}
		c.ID, c.Total, c.Orders = v.Customer, c.Total+v.Amount, c.Orders+1
		customers.Put(w, c)
		return nil
	}, readmodel.Loads(customers, func(v OrderPlaced) string { return v.Customer }))
}
