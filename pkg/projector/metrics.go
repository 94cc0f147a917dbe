package projector

import (
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
}

func newMetrics(reg prometheus.Registerer, projection string, version int, topic string) *metrics {
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
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_lag", ConstLabels: labels,
			Help: "Events between the stored position and the partition's end, per partition owned here."}, []string{"partition"}),
		offset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_offset", ConstLabels: labels,
			Help: "The stored next offset, per partition owned here."}, []string{"partition"}),
	}
	if reg != nil {
		reg.MustRegister(m.events, m.batches, m.transient, m.fenced, m.gaps, m.outOfOrder, m.resolved, m.lag, m.offset, m.effects)
	}
	return m
}

func (m *metrics) observe(out outcome, d time.Duration) {
	m.events.WithLabelValues("applied").Add(float64(out.applied))
	m.events.WithLabelValues("duplicate").Add(float64(out.duplicates))
	m.events.WithLabelValues("ignored").Add(float64(out.ignored))
	m.events.WithLabelValues("parked").Add(float64(out.parked))
	m.batches.Observe(d.Seconds())
}
