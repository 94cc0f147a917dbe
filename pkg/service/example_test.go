package service_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/service"
	"github.com/projector/projector/pkg/sideeffects"
)

type ticketSold struct {
	TicketID string `json:"ticket_id"`
	Email    string `json:"email"`
}

// A service of one event type, one table, one effect and one route. A real main
// calls service.Main(cfg); Run is the same without exiting.
func Example() {
	reg := events.NewRegistry()
	events.Register[ticketSold](reg, "TicketSold")
	cfg := service.Config{
		Name: "tickets", About: "tickets sold", Topic: "tickets", Projection: "tickets",
		NewProjection: func(name string, version int) (*readmodel.Projection, error) {
			p, err := readmodel.New(name, version, reg)
			if err != nil {
				return nil, err
			}
			p.Migrate(`CREATE TABLE tickets (ticket_id text PRIMARY KEY)`)
			readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v ticketSold) error {
				w.Exec(`INSERT INTO tickets VALUES ($1)`, v.TicketID)
				return nil
			})
			return p, nil
		},
		Effects: []service.Effect{{Name: "receipt", New: func(reg *events.Registry, d service.Deps) (*sideeffects.Effect, error) {
			e, err := sideeffects.Define("receipt", reg)
			if err != nil {
				return nil, err
			}
			sideeffects.On(e, func(ctx context.Context, run sideeffects.Run, _ events.Event, v ticketSold) error {
				return d.Mailer.Send(ctx, v.Email, "Your ticket", sideeffects.MessageID(run.Key), "Ticket "+v.TicketID)
			})
			return e, nil
		}}},
		Routes: func(mux *http.ServeMux, rm service.ReadModel) {
			mux.HandleFunc("GET /v1/tickets/count", func(w http.ResponseWriter, r *http.Request) {
				var n int64
				err := rm.Pool.QueryRow(r.Context(), `SELECT count(*) FROM `+rm.Schema()+`.tickets`).Scan(&n)
				if err != nil {
					service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
					return
				}
				service.WriteJSON(w, http.StatusOK, map[string]int64{"tickets": n})
			})
		},
	}
	var out bytes.Buffer
	_ = service.Run(context.Background(), cfg, []string{"--help"}, &out, &out)
	fmt.Println(strings.Join(strings.Split(out.String(), "\n")[:4], "\n"))
	// Output:
	// tickets builds a read model in PostgreSQL from the event log and serves it.
	// The read model: tickets sold.
	//
	// Usage: tickets COMMAND [flags]
}
