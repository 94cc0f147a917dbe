package orders_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/projector/projector/internal/orders"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projectortest"
	"github.com/projector/projector/pkg/readmodel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func generate(t *testing.T, n int) []events.Event {
	t.Helper()
	g, err := orders.NewGenerator(1, 50)
	require.NoError(t, err)
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = g.Next()
	}
	return evs
}

// The fold keeps per-customer totals equal to the sum of their open orders.
func TestFoldTotalsAreTheOpenOrders(t *testing.T) {
	t.Parallel()
	s, err := orders.Fold(generate(t, 5000))
	require.NoError(t, err)
	want := map[string]orders.Customer{}
	cancelled := 0
	for _, o := range s.Orders {
		if o.Cancelled {
			cancelled++
			continue
		}
		c := want[o.CustomerID]
		c.Orders++
		c.TotalCents += o.AmountCents
		want[o.CustomerID] = c
	}
	require.NotZero(t, cancelled, "the workload cancels some orders")
	for id, c := range s.Customers {
		require.Equal(t, want[id], c, "customer %s", id)
	}
}

// The Exec handlers, and the row API's, build what the fold says, applied in log order.
func TestHandlersEqualTheFold(t *testing.T) {
	t.Run("exec", func(t *testing.T) { handlersEqualTheFold(t, orders.NewProjection) })
	t.Run("rows", func(t *testing.T) { handlersEqualTheFold(t, orders.NewRowProjection) })
}

func handlersEqualTheFold(t *testing.T, newProjection func(string, int) (*readmodel.Projection, error)) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	p, err := newProjection("orders_test", 1)
	require.NoError(t, err)
	h := projectortest.New(t, pool, p)
	evs := generate(t, 1500)
	ctx := context.Background()
	require.NoError(t, h.Apply(ctx, evs...))
	got, err := orders.Load(ctx, h.DB(), h.Schema())
	require.NoError(t, err)
	want, err := orders.Fold(evs)
	require.NoError(t, err)
	require.Empty(t, orders.Diff(want, got, 5))
}

// The bench folds the log as it reads it, every partition at once: the partitions'
// events interleave in any way, each partition's in order. Every order's events are
// in one partition (keyed by order id), and a customer's totals are sums, so any such
// interleaving folds to what the log order does.
func TestFolderTakesThePartitionsInAnyInterleaving(t *testing.T) {
	t.Parallel()
	evs := generate(t, 20000)
	want, err := orders.Fold(evs)
	require.NoError(t, err)
	parts := make([][]events.Event, 12)
	for _, e := range evs {
		p := eventlog.Murmur2Partition([]byte(e.Subject), len(parts))
		parts[p] = append(parts[p], e)
	}
	f := orders.NewFolder()
	for i := 0; len(parts) > 0; i++ { // round robin, a partition dropped when done
		p := i % len(parts)
		require.NoError(t, f.Add(parts[p][0]))
		if parts[p] = parts[p][1:]; len(parts[p]) == 0 {
			parts = append(parts[:p], parts[p+1:]...)
		}
	}
	require.Empty(t, orders.Diff(want, f.State(), 5))
	require.NoError(t, f.Add(evs[0]), "an event seen before")
	require.Empty(t, orders.Diff(want, f.State(), 5), "an event seen before is skipped")
}
