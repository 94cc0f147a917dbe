package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
)

func TestPostgresDownMidReplayWaitsParksNothingAndCompletes(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 4)
	pg := testenv.NewPrivatePostgres(t)
	f.pool, f.schema = pg.Pool(), "projector"

	gen, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 5, Users: 500})
	if err != nil {
		t.Fatal(err)
	}
	f.generate(gen, 40000)
	p := f.domainProjection()
	cfg := f.config(p)
	cfg.BatchSize = 200 // many small transactions: the stop lands mid-replay
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	f.start(cfg)

	testenv.WaitFor(t, time.Minute, "the replay to start", func() bool {
		var sum int64
		for _, n := range f.stored(p) {
			sum += n
		}
		return sum > 2000
	})
	pg.Stop("fast")
	stoppedAt := time.Now()
	time.Sleep(3 * time.Second) // the projector retries against a server that is gone
	pg.Start()
	t.Logf("PostgreSQL was down for %v", time.Since(stoppedAt).Round(time.Millisecond))

	f.waitCaughtUp(p, 2*time.Minute)
	f.assertEqualsFold(p)
	parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 0 {
		t.Fatalf("%d events parked during an outage; first: %+v", len(parked), parked[0])
	}
	if n := counter(t, reg, "projector_transient_errors_total"); n == 0 {
		t.Fatal("no transient error was retried: the outage did not land mid-replay")
	} else {
		t.Logf("%v transient errors retried", n)
	}
}

// counter sums a counter's samples from a registry.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// counterLabel sums a counter's samples that carry label=value.
func counterLabel(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
