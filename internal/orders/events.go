package orders

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/projector/projector/pkg/events"
)

// Source is the CloudEvents source of the workload's events.
const Source = "example-orders"

// OrderPlaced is the event: a customer placed an order.
type OrderPlaced struct {
	OrderID     string `json:"order_id"`
	CustomerID  string `json:"customer_id"`
	AmountCents int64  `json:"amount_cents"`
}

// OrderAmended is the event: an open order's amount changed.
type OrderAmended struct {
	OrderID     string `json:"order_id"`
	CustomerID  string `json:"customer_id"`
	AmountCents int64  `json:"amount_cents"`
}

// OrderCancelled is the event: an open order was cancelled; it no longer counts.
type OrderCancelled struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
}

// Registry returns a registry holding the workload's event types.
func Registry() *events.Registry {
	r := events.NewRegistry()
	events.Register[OrderPlaced](r, "OrderPlaced")
	events.Register[OrderAmended](r, "OrderAmended")
	events.Register[OrderCancelled](r, "OrderCancelled")
	return r
}

// Generator produces the workload deterministically (but for event ids): orders
// placed by Customers customers, some amended or cancelled while open. Not safe
// for concurrent use.
type Generator struct {
	reg       *events.Registry
	rng       *rand.Rand
	customers int
	n         int
	start     time.Time
	open      []*order // orders that may still be amended or cancelled
}

type order struct {
	id, customer string
	seq          uint64
}

// NewGenerator returns a generator of orders from customers customers.
func NewGenerator(seed uint64, customers int) (*Generator, error) {
	if customers < 1 {
		return nil, fmt.Errorf("orders: customers %d must be positive", customers)
	}
	return &Generator{reg: Registry(), rng: rand.New(rand.NewPCG(seed, 0x0dde75)), customers: customers,
		start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, nil
}

// Next returns the next event.
func (g *Generator) Next() events.Event {
	g.n++
	t := g.start.Add(time.Duration(g.n) * time.Millisecond)
	roll := g.rng.IntN(100)
	if len(g.open) < 100 || roll < 60 {
		o := &order{id: fmt.Sprintf("order-%09d", g.n), customer: fmt.Sprintf("customer-%05d", g.rng.IntN(g.customers)), seq: 1}
		g.open = append(g.open, o)
		return g.event(o, OrderPlaced{OrderID: o.id, CustomerID: o.customer, AmountCents: g.amount()}, t)
	}
	i := g.rng.IntN(len(g.open))
	o := g.open[i]
	o.seq++
	if roll < 85 {
		return g.event(o, OrderAmended{OrderID: o.id, CustomerID: o.customer, AmountCents: g.amount()}, t)
	}
	g.open[i] = g.open[len(g.open)-1]
	g.open = g.open[:len(g.open)-1]
	return g.event(o, OrderCancelled{OrderID: o.id, CustomerID: o.customer}, t)
}

func (g *Generator) amount() int64 { return 100 + g.rng.Int64N(100_000) }

func (g *Generator) event(o *order, v any, t time.Time) events.Event {
	e, err := g.reg.New(Source, o.id, v, events.WithSequence(o.seq), events.WithTime(t))
	if err != nil {
		panic(fmt.Sprintf("orders: generating %T: %v", v, err)) // the generator's own types: a bug
	}
	return e
}
