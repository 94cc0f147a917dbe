package service

import (
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/internal/statusview"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// newAPI serves the runner's status, its metrics and the service's own routes.
// stored asks where the projection stands in PostgreSQL and Kafka, for every instance.
func (s *service) newAPI(r *projector.Runner, pool *pgxpool.Pool, p *readmodel.Projection, reg *prometheus.Registry, stored admin.Inspection) http.Handler {
	var routes func(*http.ServeMux)
	if s.Routes != nil {
		routes = func(mux *http.ServeMux) { s.Routes(mux, ReadModel{Pool: pool, Projection: p}) }
	}
	return statusview.NewAPI(r, reg, stored, routes)
}

// WriteJSON answers with status code and v as JSON: for a service's own routes.
func WriteJSON(w http.ResponseWriter, code int, v any) { statusview.WriteJSON(w, code, v) }
