package projector

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	events     *prometheus.CounterVec
	batches    prometheus.Histogram
	transient  prometheus.Counter
	fenced     prometheus.Counter
	gaps       prometheus.Counter
	outOfOrder prometheus.Counter
	resolved   prometheus.Counter
	lag        *prometheus.GaugeVec
	offset     *prometheus.GaugeVec
	effects    *prometheus.CounterVec
	deadlocks  prometheus.Counter
}

// newMetrics makes the Runner's collectors and registers them with reg, when there
// is one. A Registerer that already holds the same collectors — another Runner of the
// same projection version and topic in this process — keeps its own, and this Runner
// counts into them: the series are the projection's, not the Runner's. Any other
// refusal (a collector of the same name with other help or labels) is returned.
func newMetrics(reg prometheus.Registerer, projection string, version int, topic string) (*metrics, error) {
	labels := prometheus.Labels{"projection": projection, "version": strconv.Itoa(version), "topic": topic}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "projector_events_total", ConstLabels: labels,
			Help: "Events settled, by outcome: applied, duplicate, ignored, parked."}, []string{"outcome"}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "projector_batch_seconds", ConstLabels: labels,
			Help: "Time to apply and commit one partition batch.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		transient: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_transient_errors_total", ConstLabels: labels,
			Help: "Transient errors retried with backoff."}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_fenced_total", ConstLabels: labels,
			Help: "Batches refused because another member owns the partition."}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_sequence_gaps_total", ConstLabels: labels,
			Help: "Events whose sequence skipped ahead of their aggregate's: applied under --gaps warn, parked under halt. Counted once per event."}),
		outOfOrder: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_sequence_stale_total", ConstLabels: labels,
			Help: "Events whose sequence is at or below their aggregate's, with an id never applied (a swap, a late retry, a second writer): applied under --gaps warn, parked under halt. Counted once per event."}),
		resolved: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_parked_resolved_total", ConstLabels: labels,
			Help: "Parked events applied on retry."}),
		effects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "projector_effects_total", ConstLabels: labels,
			Help: "Effect runs by effect and outcome: fired, suppressed_ledger, suppressed_horizon, skipped_forgotten, retried, parked, lease_lost."},
			[]string{"effect", "outcome"}),
		deadlocks: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_deadlocks_total", ConstLabels: labels,
			Help: "Batches chosen as a deadlock victim (40P01), each retried in halves after a backoff."}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_lag", ConstLabels: labels,
			Help: "Events between the stored position and the partition's end, per partition owned here."}, []string{"partition"}),
		offset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_offset", ConstLabels: labels,
			Help: "The stored next offset, per partition owned here."}, []string{"partition"}),
	}
	if reg == nil {
		return m, nil
	}
	err := errors.Join(reuse(reg, &m.events), reuse(reg, &m.batches), reuse(reg, &m.transient), reuse(reg, &m.fenced),
		reuse(reg, &m.gaps), reuse(reg, &m.outOfOrder), reuse(reg, &m.resolved), reuse(reg, &m.lag), reuse(reg, &m.offset),
		reuse(reg, &m.effects), reuse(reg, &m.deadlocks))
	if err != nil {
		return nil, fmt.Errorf("projector: Config.Registerer: %w", err)
	}
	return m, nil
}

// reuse registers *c, or, when reg already holds an equal collector, points *c at
// that one.
func reuse[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		return err
	}
	existing, ok := are.ExistingCollector.(C)
	if !ok {
		return fmt.Errorf("%w, as a collector of another type", err)
	}
	*c = existing
	return nil
}

func (m *metrics) observe(out outcome, d time.Duration) {
	m.events.WithLabelValues("applied").Add(float64(out.applied))
	m.events.WithLabelValues("duplicate").Add(float64(out.duplicates))
	m.events.WithLabelValues("ignored").Add(float64(out.ignored))
	m.events.WithLabelValues("parked").Add(float64(out.parked))
	m.batches.Observe(d.Seconds())
}
