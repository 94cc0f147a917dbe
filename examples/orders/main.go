// Command orders is the tutorial's service (docs/tutorial.md): orders and customers,
// and a mail when an order ships. Its domain is in events.go, projection.go,
// mail.go and routes.go; this file is the whole of its wiring.
//
//	go run ./examples/orders run          consume the log, serve http://127.0.0.1:18080/
//	go run ./examples/orders status       where the read model stands
//	go run ./examples/orders --help       every command; 'COMMAND --help', every flag
package main

// tutorial:begin main
import "github.com/projector/projector/pkg/service"

// config is the service: its read model, its effect and its routes. Package service
// gives it every command of cmd/projector; the defaults of --topic and --projection
// are these, every other setting a flag or an environment variable.
func config() service.Config {
	return service.Config{
		Name:          "orders",
		About:         "customers and their orders",
		Topic:         "orders",
		Projection:    "orders",
		NewProjection: NewProjection,
		Effects: []service.Effect{{
			Name: ShippedMailEffect,
			Help: "mails the customer when their order ships, at their current address",
			New:  ShippedMail,
		}},
		Routes:     Routes,
		RoutesHelp: []string{"GET /v1/orders/{id}          one order"},
		MailFrom:   "shipping@orders.invalid",
	}
}

func main() { service.Main(config()) }

// tutorial:end main
