// Command projector is the example service: the example domain's read model (users
// with their article counts, and articles) and its welcome mail, on package service,
// plus the example's query routes. 'projector --help' lists its commands.
package main

import (
	"net/http"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/service"
	"github.com/projector/projector/pkg/sideeffects"
)

func main() { service.Main(config()) }

// config is the example service: package service gives it every command.
func config() service.Config {
	return service.Config{
		Name:          "projector",
		About:         "the example domain's users with their article counts, and articles",
		Topic:         "users",
		Projection:    domain.ProjectionName,
		NewProjection: domain.NewProjection,
		Effects: []service.Effect{{
			Name: domain.WelcomeEmailEffect,
			Help: "a welcome mail over SMTP on UserRegistered, once per user",
			New: func(reg *events.Registry, d service.Deps) (*sideeffects.Effect, error) {
				return domain.WelcomeEmail(reg, d.Mailer)
			},
		}},
		Routes: func(mux *http.ServeMux, rm service.ReadModel) {
			q := queries{pool: rm.Pool, schema: rm.Schema()}
			mux.HandleFunc("GET /v1/users/{id}", q.user)
			mux.HandleFunc("GET /v1/users", q.users)
			mux.HandleFunc("GET /v1/stats", q.stats)
		},
		RoutesHelp: []string{
			"GET /v1/users/{id}          one user, with their articles",
			"GET /v1/users?limit=N       users, by id",
			"GET /v1/stats               row counts",
		},
	}
}
