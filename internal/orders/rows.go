package orders

import (
	"context"
	"time"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// OrderRow is an orders row, for the row API (NewRowProjection).
type OrderRow struct {
	OrderID     string    `db:"order_id"`
	CustomerID  string    `db:"customer_id"`
	AmountCents int64     `db:"amount_cents"`
	Cancelled   bool      `db:"cancelled"`
	PlacedAt    time.Time `db:"placed_at"`
}

// CustomerRow is a customers row, for the row API.
type CustomerRow struct {
	CustomerID string `db:"customer_id"`
	Orders     int64  `db:"orders"`
	TotalCents int64  `db:"total_cents"`
}

// NewRowProjection is NewProjection's read model — the same tables, the same fold —
// on the row API: each batch loads the orders and customers its events touch (one
// query a table, rows locked in key order), folds them in memory and writes each
// table once, in key order, so partitions that share customers take turns instead
// of deadlocking.
func NewRowProjection(name string, version int) (*readmodel.Projection, error) {
	p, err := readmodel.New(name, version, Registry())
	if err != nil {
		return nil, err
	}
	migrate(p)
	ordersT := readmodel.NewTable[string, OrderRow](p, "orders", "order_id")
	customers := readmodel.NewTable[string, CustomerRow](p, "customers", "customer_id")
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, e events.Event, v OrderPlaced) error {
		ordersT.Put(w, OrderRow{OrderID: v.OrderID, CustomerID: v.CustomerID, AmountCents: v.AmountCents, PlacedAt: e.Time})
		return addToCustomer(ctx, w, customers, v.CustomerID, 1, v.AmountCents)
	}, readmodel.Loads(customers, func(v OrderPlaced) string { return v.CustomerID }))
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v OrderAmended) error {
		o, ok, err := ordersT.Get(ctx, w, v.OrderID)
		if err != nil || !ok || o.Cancelled {
			return err
		}
		delta := v.AmountCents - o.AmountCents
		o.AmountCents = v.AmountCents
		ordersT.Put(w, o)
		_, err = customers.Update(ctx, w, o.CustomerID, func(c *CustomerRow) { c.TotalCents += delta })
		return err
	}, readmodel.Loads(ordersT, func(v OrderAmended) string { return v.OrderID }),
		readmodel.Loads(customers, func(v OrderAmended) string { return v.CustomerID }))
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v OrderCancelled) error {
		o, ok, err := ordersT.Get(ctx, w, v.OrderID)
		if err != nil || !ok || o.Cancelled {
			return err
		}
		o.Cancelled = true
		ordersT.Put(w, o)
		_, err = customers.Update(ctx, w, o.CustomerID, func(c *CustomerRow) { c.Orders--; c.TotalCents -= o.AmountCents })
		return err
	}, readmodel.Loads(ordersT, func(v OrderCancelled) string { return v.OrderID }),
		readmodel.Loads(customers, func(v OrderCancelled) string { return v.CustomerID }))
	return p, nil
}

func addToCustomer(ctx context.Context, w *readmodel.Writer, t *readmodel.Table[string, CustomerRow], id string, orders, cents int64) error {
	c, ok, err := t.Get(ctx, w, id)
	if err != nil {
		return err
	}
	if !ok {
		c = CustomerRow{CustomerID: id}
	}
	c.Orders += orders
	c.TotalCents += cents
	t.Put(w, c)
	return nil
}
