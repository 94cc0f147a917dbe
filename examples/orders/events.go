package main

import "github.com/projector/projector/pkg/events"

// tutorial:begin events
// The events of the orders service. Every event's subject is the customer id: a
// customer's orders belong to the customer's aggregate, so all of one customer's
// events are in one partition, in order, and a shipped order's customer row is
// always applied before the order ships.
const (
	TypeCustomerRegistered = "CustomerRegistered"
	TypeCustomerMoved      = "CustomerMoved"
	TypeOrderPlaced        = "OrderPlaced"
	TypeOrderShipped       = "OrderShipped"
)

// CustomerRegistered is the event: a customer signed up.
type CustomerRegistered struct {
	CustomerID string `json:"customer_id"`
	Name       string `json:"name"`
	Email      string `json:"email"`
	Address    string `json:"address"`
}

// CustomerMoved is the event: a customer has a new address.
type CustomerMoved struct {
	CustomerID string `json:"customer_id"`
	Address    string `json:"address"`
}

// OrderPlaced is the event: a customer ordered an item.
type OrderPlaced struct {
	CustomerID string `json:"customer_id"`
	OrderID    string `json:"order_id"`
	Item       string `json:"item"`
	Cents      int64  `json:"cents"`
}

// OrderShipped is the event: an order left the warehouse.
type OrderShipped struct {
	CustomerID string `json:"customer_id"`
	OrderID    string `json:"order_id"`
	Carrier    string `json:"carrier"`
}

// Registry holds the service's event types: decoding is by type name, to these structs.
func Registry() *events.Registry {
	r := events.NewRegistry()
	events.Register[CustomerRegistered](r, TypeCustomerRegistered)
	events.Register[CustomerMoved](r, TypeCustomerMoved)
	events.Register[OrderPlaced](r, TypeOrderPlaced)
	events.Register[OrderShipped](r, TypeOrderShipped)
	return r
}

// tutorial:end events
