// Package service turns a projection and its effects into a complete command-line
// service: the user's own binary gains run (the read model kept current, with the
// HTTP status page, /metrics, /healthz, /readyz and the user's own routes), status,
// dlq, snapshot, versions, replay and migrate, every flag with its environment
// variable, graceful stop on SIGINT and SIGTERM, and progress bars.
//
// A service's main is its registry and projection (in NewProjection), its effects,
// then one call:
//
//	func main() {
//		service.Main(service.Config{
//			Name:          "orders",
//			Topic:         "orders",
//			Projection:    "orders",
//			NewProjection: newProjection, // func(name string, version int) (*readmodel.Projection, error)
//			Effects:       []service.Effect{{Name: "shipped_mail", New: shippedMail}},
//			Routes:        routes, // func(mux *http.ServeMux, rm service.ReadModel)
//		})
//	}
//
// The defaults of --topic and --projection are the Config's; those of the servers
// (--brokers, --database-url, --redis-url, --smtp-addr) are the local stack's.
// 'NAME COMMAND --help' lists every flag. examples/orders is a complete service, and
// docs/tutorial.md walks through it.
package service
