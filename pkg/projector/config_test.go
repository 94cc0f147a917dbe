package projector_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// unconnected returns the example projection named name and a pool that never
// connects: enough for New, which does not connect.
func unconnected(t *testing.T, name string) (*readmodel.Projection, *pgxpool.Pool) {
	t.Helper()
	p, err := domain.NewProjection(name, 1)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return p, pool
}

// ReadyLag is per partition; zero means the default, ReadyLagZero a lag of 0, and
// the status reports the lag it applies and the rule.
func TestReadyLagSetting(t *testing.T) {
	t.Parallel()
	p, pool := unconnected(t, "readylag")
	for _, c := range []struct {
		set, want int64
		bad       bool
	}{
		{set: 0, want: projector.ReadyLagDefault},
		{set: projector.ReadyLagZero, want: 0},
		{set: 1, want: 1},
		{set: 250, want: 250},
		{set: -2, bad: true},
	} {
		r, err := projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, ReadyLag: c.set})
		if c.bad {
			if err == nil || !strings.Contains(err.Error(), "ReadyLag") {
				t.Errorf("ReadyLag %d: err %v, want refused by name", c.set, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ReadyLag %d: %v", c.set, err)
		}
		if st := r.Status(); st.ReadyLag != c.want || !strings.HasPrefix(st.ReadyRule, "per partition") {
			t.Errorf("ReadyLag %d: status says ready_lag %d (%q), want %d per partition", c.set, st.ReadyLag, st.ReadyRule, c.want)
		}
	}
}

// FoldRows: zero is the default, FoldRowsOff no folds, below that refused by name.
func TestFoldRowsSetting(t *testing.T) {
	t.Parallel()
	p, pool := unconnected(t, "foldrows")
	for _, rows := range []int{0, projector.FoldRowsOff, 1, 8000} {
		if _, err := projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, FoldRows: rows}); err != nil {
			t.Errorf("FoldRows %d: %v", rows, err)
		}
	}
	_, err := projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, FoldRows: -2})
	if err == nil || !strings.Contains(err.Error(), "FoldRows -2") {
		t.Errorf("FoldRows -2: err %v, want refused by name", err)
	}
}

// FoldReadsAtOnce: zero is the default, below that refused by name.
func TestFoldReadsAtOnceSetting(t *testing.T) {
	t.Parallel()
	p, pool := unconnected(t, "foldreads")
	for _, n := range []int{0, 1, 16} {
		if _, err := projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, FoldReadsAtOnce: n}); err != nil {
			t.Errorf("FoldReadsAtOnce %d: %v", n, err)
		}
	}
	_, err := projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, FoldReadsAtOnce: -1})
	if err == nil || !strings.Contains(err.Error(), "FoldReadsAtOnce -1") {
		t.Errorf("FoldReadsAtOnce -1: err %v, want refused by name", err)
	}
}
