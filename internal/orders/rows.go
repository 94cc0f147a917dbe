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
	Orders     int64  `db:"orders,sum"`
	TotalCents int64  `db:"total_cents,sum"`
}

// NewRowProjection is NewProjection's read model — the same tables, the same fold —
// on the row API: each batch loads the orders its events touch (one query, rows
// locked in key order), folds them in memory and writes each table once, in key
// order. The customers' totals, which every partition changes, are added to
// (Table.Add) without being read: they are locked only from the batch's write to
// its commit, so partitions that share customers hardly wait for each other.
func NewRowProjection(name string, version int) (*readmodel.Projection, error) {
	p, err := readmodel.New(name, version, Registry())
	if err != nil {
		return nil, err
	}
	migrate(p)
	ordersT := readmodel.NewTable[string, OrderRow](p, "orders", "order_id")
	customers := readmodel.NewTable[string, CustomerRow](p, "customers", "customer_id")
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v OrderPlaced) error {
		ordersT.Put(w, OrderRow{OrderID: v.OrderID, CustomerID: v.CustomerID, AmountCents: v.AmountCents, PlacedAt: e.Time})
		customers.Add(w, CustomerRow{CustomerID: v.CustomerID, Orders: 1, TotalCents: v.AmountCents})
		return nil
	})
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v OrderAmended) error {
		o, ok, err := ordersT.Get(ctx, w, v.OrderID)
		if err != nil || !ok || o.Cancelled {
			return err
		}
		delta := v.AmountCents - o.AmountCents
		o.AmountCents = v.AmountCents
		ordersT.Put(w, o)
		customers.Add(w, CustomerRow{CustomerID: o.CustomerID, TotalCents: delta})
		return nil
	}, readmodel.Loads(ordersT, func(v OrderAmended) string { return v.OrderID }))
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v OrderCancelled) error {
		o, ok, err := ordersT.Get(ctx, w, v.OrderID)
		if err != nil || !ok || o.Cancelled {
			return err
		}
		o.Cancelled = true
		ordersT.Put(w, o)
		customers.Add(w, CustomerRow{CustomerID: o.CustomerID, Orders: -1, TotalCents: -o.AmountCents})
		return nil
	}, readmodel.Loads(ordersT, func(v OrderCancelled) string { return v.OrderID }))
	return p, nil
}
