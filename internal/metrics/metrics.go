// Package metrics is the runtime's Prometheus collectors (projector_*): events
// by outcome, batch durations, transient errors, fencing, sequence gaps and stale
// sequences, resolved parked events, deadlocks, effect runs and the events the
// effects read from the log themselves, and each owned
// partition's lag and offset.
//
// Package projector (the runtime) makes one Set per Runner (New, on
// Config.Registerer) and hands the counters the lanes and the effect engine count
// into (internal/lane, internal/effects); it imports this package, never the
// reverse. A new metric, or a change to a name, help text or label, goes here.
package metrics

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Set is one Runner's collectors, labelled with its projection, version and topic.
type Set struct {
	Events     *prometheus.CounterVec
	Batches    prometheus.Histogram
	Transient  prometheus.Counter
	Fenced     prometheus.Counter
	Gaps       prometheus.Counter
	OutOfOrder prometheus.Counter
	Resolved   prometheus.Counter
	Lag        *prometheus.GaugeVec
	Offset     *prometheus.GaugeVec
	Effects    *prometheus.CounterVec
	EffectLogs prometheus.Counter // events the effects read from the log themselves
	Deadlocks  prometheus.Counter
	Folds      prometheus.Histogram // reads per fold (several reads of a partition in one transaction)
	Unfolded   prometheus.Counter
}

// New makes the Runner's collectors and registers them with reg, when there
// is one. A Registerer that already holds the same collectors — another Runner of the
// same projection version and topic in this process — keeps its own, and this Runner
// counts into them: the series are the projection's, not the Runner's. Any other
// refusal (a collector of the same name with other help or labels) is returned.
func New(reg prometheus.Registerer, projection string, version int, topic string) (*Set, error) {
	labels := prometheus.Labels{"projection": projection, "version": strconv.Itoa(version), "topic": topic}
	m := &Set{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "projector_events_total", ConstLabels: labels,
			Help: "Events settled, by outcome: applied, duplicate, ignored, parked."}, []string{"outcome"}),
		Batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "projector_batch_seconds", ConstLabels: labels,
			Help: "Time to apply and commit one partition batch.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		Transient: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_transient_errors_total", ConstLabels: labels,
			Help: "Transient errors retried with backoff."}),
		Fenced: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_fenced_total", ConstLabels: labels,
			Help: "Batches refused because another member owns the partition."}),
		Gaps: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_sequence_gaps_total", ConstLabels: labels,
			Help: "Events whose sequence skipped ahead of their aggregate's: applied under --gaps warn, parked under halt. Counted once per event."}),
		OutOfOrder: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_sequence_stale_total", ConstLabels: labels,
			Help: "Events whose sequence is at or below their aggregate's, with an id never applied (a swap, a late retry, a second writer): applied under --gaps warn, parked under halt. Counted once per event."}),
		Resolved: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_parked_resolved_total", ConstLabels: labels,
			Help: "Parked events applied on retry."}),
		Effects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "projector_effects_total", ConstLabels: labels,
			Help: "Effect runs by effect and outcome: fired, suppressed_ledger, suppressed_horizon, skipped_forgotten, retried, parked, lease_lost."},
			[]string{"effect", "outcome"}),
		EffectLogs: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_effect_log_reads_total", ConstLabels: labels,
			Help: "Events the effect dispatchers read from the log themselves, not handed over by the read model: behind a fold whose events are not all older than the effects' horizons, after the feed overflowed, after a claim. A replay whose history is older than the horizons reads none."}),
		Deadlocks: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_deadlocks_total", ConstLabels: labels,
			Help: "Batches chosen as a deadlock victim (40P01), each retried in halves after a backoff."}),
		Folds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "projector_fold_reads", ConstLabels: labels,
			Help: "Reads of a partition committed in one transaction while it replays (a fold; see Config.FoldRows).", Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
		Unfolded: prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_folds_failed_total", ConstLabels: labels,
			Help: "Folds rolled back on a failure, their events applied again from the log batch by batch."}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_lag", ConstLabels: labels,
			Help: "Events between the stored position and the partition's end, per partition owned here."}, []string{"partition"}),
		Offset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_offset", ConstLabels: labels,
			Help: "The stored next offset, per partition owned here."}, []string{"partition"}),
	}
	if reg == nil {
		return m, nil
	}
	err := errors.Join(reuse(reg, &m.Events), reuse(reg, &m.Batches), reuse(reg, &m.Transient), reuse(reg, &m.Fenced),
		reuse(reg, &m.Gaps), reuse(reg, &m.OutOfOrder), reuse(reg, &m.Resolved), reuse(reg, &m.Lag), reuse(reg, &m.Offset),
		reuse(reg, &m.Effects), reuse(reg, &m.EffectLogs), reuse(reg, &m.Deadlocks), reuse(reg, &m.Folds), reuse(reg, &m.Unfolded))
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

// Observe counts a committed batch's events by outcome, and its duration.
func (m *Set) Observe(applied, duplicates, ignored, parked int, d time.Duration) {
	m.Events.WithLabelValues("applied").Add(float64(applied))
	m.Events.WithLabelValues("duplicate").Add(float64(duplicates))
	m.Events.WithLabelValues("ignored").Add(float64(ignored))
	m.Events.WithLabelValues("parked").Add(float64(parked))
	m.Batches.Observe(d.Seconds())
}
