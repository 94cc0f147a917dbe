package projector_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/projector"
)

// Two Runners on one Registerer used to panic in New (MustRegister). Runners of the
// same projection version share its series; another projection adds its own; a
// collector that clashes with a metric's name is an error from New, not a panic.
func TestRunnersShareARegisterer(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never connects
	require.NoError(t, err)
	defer pool.Close()
	config := func(name string, reg prometheus.Registerer) projector.Config {
		p, err := domain.NewProjection(name, 1)
		require.NoError(t, err)
		return projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, Registerer: reg}
	}

	reg := prometheus.NewRegistry()
	for range 2 {
		_, err := projector.New(config("users", reg))
		require.NoError(t, err)
	}
	require.Equal(t, 1, series(t, reg, "projector_fenced_total"), "one series for the projection version")
	_, err = projector.New(config("orders", reg))
	require.NoError(t, err)
	require.Equal(t, 2, series(t, reg, "projector_fenced_total"), "a series per projection")

	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "projector_fenced_total", Help: "something else"}))
	_, err = projector.New(config("users", clash))
	require.ErrorContains(t, err, "Config.Registerer")
	require.ErrorContains(t, err, "projector_fenced_total")
}

// series counts the series of one metric in the registry.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}
