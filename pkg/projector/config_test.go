package projector_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/projector"
)

// ReadyLag is per partition; zero means the default, ReadyLagZero a lag of 0, and
// the status reports the lag it applies and the rule.
func TestReadyLagSetting(t *testing.T) {
	t.Parallel()
	p, err := domain.NewProjection("readylag", 1)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
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
	p, err := domain.NewProjection("foldrows", 1)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, rows := range []int{0, projector.FoldRowsOff, 1, 8000} {
		if _, err := projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, FoldRows: rows}); err != nil {
			t.Errorf("FoldRows %d: %v", rows, err)
		}
	}
	_, err = projector.New(projector.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Projection: p, Pool: pool, FoldRows: -2})
	if err == nil || !strings.Contains(err.Error(), "FoldRows -2") {
		t.Errorf("FoldRows -2: err %v, want refused by name", err)
	}
}
