package main

import (
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projector/projector/pkg/service"
)

// tutorial:begin routes
// Order is an order as GET /v1/orders/{id} answers it.
type Order struct {
	OrderID    string     `json:"order_id"`
	CustomerID string     `json:"customer_id"`
	Item       string     `json:"item"`
	Cents      int64      `json:"cents"`
	PlacedAt   time.Time  `json:"placed_at"`
	ShippedAt  *time.Time `json:"shipped_at,omitempty"`
}

// Routes mounts the service's query API beside the status page and /metrics.
func Routes(mux *http.ServeMux, rm service.ReadModel) {
	mux.HandleFunc("GET /v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		var o Order
		err := rm.Pool.QueryRow(r.Context(), `SELECT order_id, customer_id, item, cents, placed_at, shipped_at
			FROM `+rm.Schema()+`.orders WHERE order_id = $1`, r.PathValue("id")).
			Scan(&o.OrderID, &o.CustomerID, &o.Item, &o.Cents, &o.PlacedAt, &o.ShippedAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			service.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "no such order"})
		case err != nil:
			service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		default:
			service.WriteJSON(w, http.StatusOK, o)
		}
	})
}

// tutorial:end routes
