package projector_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
)

// Regression, issue 16: when Run returns, every goroutine and Kafka connection of the
// Runner is gone. Its transport was never closed, and the activation loop inspected
// the topic over transports of its own every 500 ms, leaking two connection pools
// each time. Not parallel: goleak sees every goroutine of the process, and serial
// tests run before the parallel ones start.
func TestRunLeavesNoGoroutineBehind(t *testing.T) {
	f := newFixture(t, 2)
	gen, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 5, Users: 50})
	if err != nil {
		t.Fatal(err)
	}
	f.generate(gen, 500)
	p := f.domainProjection()
	cfg := f.config(p)
	cfg.ActivateWhenLive = true
	versions := admin.Versions{Pool: f.pool, Schema: f.schema, Projection: p.Name()}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	_, stop := f.start(cfg)
	testenv.WaitFor(t, time.Minute, "the version to be activated once live", func() bool {
		infos, err := versions.List(context.Background())
		for _, v := range infos {
			if v.Version == p.Version() && v.Active {
				return err == nil
			}
		}
		return false
	})
	stop()
}
