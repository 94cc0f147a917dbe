package projector_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/projector"
)

// A service deployed before its traffic fills its tables long after it started.
// The runner must still analyze them as they grow: without statistics, PostgreSQL
// plans the sequence-mark lookups as a read of every mark. Its analyze loop looks
// every second, however long it has run; a loop that backed off (looks at 1, 3, 7,
// 15, 31 s after the join) would look once at most between 10 and 18 s.
func TestTheRunnerAnalyzesTablesThatFillLongAfterItStarted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	p := f.domainProjection()
	var looks atomic.Int64
	f.start(f.config(p), func(r *projector.Runner) { projector.OnAnalyzeLook(r, func() { looks.Add(1) }) })
	analyzed := func() int64 {
		var n int64
		if err := f.pool.QueryRow(context.Background(), `SELECT coalesce(sum(analyze_count), 0) FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = 'aggregates'`, f.schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	time.Sleep(10 * time.Second)
	before := looks.Load()
	time.Sleep(8 * time.Second)
	if n := looks.Load() - before; n < 4 {
		t.Fatalf("the analyze loop looked %d times in 8 s, 10 s after the start; want one a second", n)
	}
	if n := analyzed(); n != 0 {
		t.Fatalf("the empty marks' table was analyzed %d times before any event", n)
	}
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 3, Users: 5000})
	if err != nil {
		t.Fatal(err)
	}
	f.generate(g, 8000) // thousands of marks: past the first analysis, at a thousand rows
	f.waitCaughtUp(p, time.Minute)
	// A connection that reported its statistics less than a second before going idle
	// reports the rest 10 s later (PostgreSQL's PGSTAT_IDLE_INTERVAL); then the loop
	// looks within a second.
	testenv.WaitFor(t, 30*time.Second, "the runner to analyze the marks' table it filled", func() bool { return analyzed() > 0 })
}
