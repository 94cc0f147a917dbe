package projector_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
)

func TestInstancesJoiningAndLeavingEqualFold(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 6)
	gen, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 21, Users: 400})
	if err != nil {
		t.Fatal(err)
	}
	f.generate(gen, 30000)
	p := f.domainProjection()
	stopWatch := f.watchOffsets(p)

	cfg := f.config(p)
	cfg.BatchSize = 100 // many transactions, so rebalances land mid-stream
	regs := make([]*prometheus.Registry, 4)
	start := func(i int) func() {
		c := cfg
		regs[i] = prometheus.NewRegistry()
		c.Registerer = regs[i]
		_, stop := f.start(c)
		return stop
	}
	progress := func(min int64) func() bool {
		return func() bool {
			var sum int64
			for _, n := range f.stored(p) {
				sum += n
			}
			return sum >= min
		}
	}
	stop0 := start(0)
	testenv.WaitFor(t, time.Minute, "first progress", progress(3000))
	stop1 := start(1) // joins: partitions move
	_ = start(2)      // joins
	f.generate(gen, 5000)
	testenv.WaitFor(t, time.Minute, "more progress", progress(12000))
	stop0() // leaves cleanly mid-stream
	_ = start(3)
	f.generate(gen, 5000)
	testenv.WaitFor(t, time.Minute, "more progress", progress(25000))
	stop1()
	f.waitCaughtUp(p, 2*time.Minute)
	stopWatch()
	f.assertEqualsFold(p)
	var applied float64
	for _, reg := range regs {
		applied += counterLabel(t, reg, "projector_events_total", "outcome", "applied")
	}
	if applied != 40000 {
		t.Fatalf("instances applied %v events in all, want each of the 40000 exactly once", applied)
	}
}
