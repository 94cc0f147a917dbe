package orders

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/events"
)

// Order is a row of the orders table.
type Order struct {
	CustomerID  string
	AmountCents int64
	Cancelled   bool
}

// Customer is a row of the customers table.
type Customer struct {
	Orders     int
	TotalCents int64
}

// State is the read model's content: what a correct projection holds.
type State struct {
	Orders    map[string]Order
	Customers map[string]Customer
}

// Fold computes the read model from events in log order, independently of the
// projector; an event id seen before is skipped, as the projector promises. Linear.
func Fold(evs []events.Event) (State, error) {
	f := NewFolder()
	for _, e := range evs {
		if err := f.Add(e); err != nil {
			return f.State(), err
		}
	}
	return f.State(), nil
}

// Folder is Fold one event at a time, for a log too long to hold in memory: each
// event costs a map lookup or two, whatever came before. Events of one order must be
// added in log order; orders may interleave in any way, as partitions do (a
// customer's totals are sums). Not safe for concurrent use.
type Folder struct {
	reg  *events.Registry
	s    State
	seen map[string]struct{}
}

// NewFolder returns a Folder of nothing yet.
func NewFolder() *Folder {
	return &Folder{reg: Registry(), s: State{Orders: map[string]Order{}, Customers: map[string]Customer{}}, seen: map[string]struct{}{}}
}

// Add folds the next event in; an event id seen before is skipped.
func (f *Folder) Add(e events.Event) error {
	if _, ok := f.seen[e.ID]; ok {
		return nil
	}
	f.seen[e.ID] = struct{}{}
	d, err := f.reg.Decode(e)
	if err != nil {
		return fmt.Errorf("orders fold: event %s: %w", e.ID, err)
	}
	s := &f.s
	switch v := d.Value.(type) {
	case OrderPlaced:
		s.Orders[v.OrderID] = Order{CustomerID: v.CustomerID, AmountCents: v.AmountCents}
		c := s.Customers[v.CustomerID]
		c.Orders++
		c.TotalCents += v.AmountCents
		s.Customers[v.CustomerID] = c
	case OrderAmended:
		if o, ok := s.Orders[v.OrderID]; ok && !o.Cancelled {
			c := s.Customers[o.CustomerID]
			c.TotalCents += v.AmountCents - o.AmountCents
			s.Customers[o.CustomerID] = c
			o.AmountCents = v.AmountCents
			s.Orders[v.OrderID] = o
		}
	case OrderCancelled:
		if o, ok := s.Orders[v.OrderID]; ok && !o.Cancelled {
			c := s.Customers[o.CustomerID]
			c.Orders--
			c.TotalCents -= o.AmountCents
			s.Customers[o.CustomerID] = c
			o.Cancelled = true
			s.Orders[v.OrderID] = o
		}
	}
	return nil
}

// State is the read model the events added so far make; it shares the Folder's maps.
func (f *Folder) State() State { return f.s }

// Load reads the read model in schema into a State.
func Load(ctx context.Context, pool *pgxpool.Pool, schema string) (State, error) {
	s := State{Orders: map[string]Order{}, Customers: map[string]Customer{}}
	q := pgx.Identifier{schema}.Sanitize()
	rows, err := pool.Query(ctx, `SELECT order_id, customer_id, amount_cents, cancelled FROM `+q+`.orders`)
	if err != nil {
		return s, err
	}
	var id string
	var o Order
	if _, err := pgx.ForEachRow(rows, []any{&id, &o.CustomerID, &o.AmountCents, &o.Cancelled}, func() error {
		s.Orders[id] = o
		return nil
	}); err != nil {
		return s, err
	}
	rows, err = pool.Query(ctx, `SELECT customer_id, orders, total_cents FROM `+q+`.customers`)
	if err != nil {
		return s, err
	}
	var c Customer
	_, err = pgx.ForEachRow(rows, []any{&id, &c.Orders, &c.TotalCents}, func() error {
		s.Customers[id] = c
		return nil
	})
	return s, err
}

// Diff describes how two states differ, at most maxDiffs differences; "" when equal.
func Diff(want, got State, maxDiffs int) string {
	var out []string
	add := func(f string, a ...any) {
		if len(out) < maxDiffs {
			out = append(out, fmt.Sprintf(f, a...))
		}
	}
	if len(want.Orders) != len(got.Orders) {
		add("orders: %d, want %d", len(got.Orders), len(want.Orders))
	}
	if len(want.Customers) != len(got.Customers) {
		add("customers: %d, want %d", len(got.Customers), len(want.Customers))
	}
	ids := make([]string, 0, len(want.Customers))
	for id := range want.Customers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if g, w := got.Customers[id], want.Customers[id]; g != w {
			add("customer %s: got %+v, want %+v", id, g, w)
		}
	}
	for id, w := range want.Orders {
		if g := got.Orders[id]; g != w {
			add("order %s: got %+v, want %+v", id, g, w)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return fmt.Sprint(out)
}
