package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
)

// A service deployed before its traffic fills its tables long after it started.
// The runner must still analyze them as they grow: without statistics, PostgreSQL
// plans the sequence-mark lookups as a read of every mark. A loop that backed off
// (1, 3, 7, 15, 31 s) would not look between 15 s and 31 s.
func TestTheRunnerAnalyzesTablesThatFillLongAfterItStarted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	p := f.domainProjection()
	f.start(f.config(p))
	analyzed := func() int64 {
		var n int64
		if err := f.pool.QueryRow(context.Background(), `SELECT coalesce(sum(analyze_count), 0) FROM pg_stat_user_tables
			WHERE schemaname = $1 AND relname = 'aggregates'`, f.schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	time.Sleep(16 * time.Second) // idle, past the looks at 1, 3, 7 and 15 s
	if n := analyzed(); n != 0 {
		t.Fatalf("the empty marks' table was analyzed %d times before any event", n)
	}
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 3, Users: 5000})
	if err != nil {
		t.Fatal(err)
	}
	f.generate(g, 8000) // thousands of marks: past the first analysis's 2,000 rows (a thousand changes and half the rows)
	f.waitCaughtUp(p, time.Minute)
	// Statistics reach pg_stat_user_tables within a second or so; the runner looks
	// every second. A loop that backed off looks next at 31 s.
	testenv.WaitFor(t, 8*time.Second, "the runner to analyze the marks' table it filled", func() bool { return analyzed() > 0 })
}
