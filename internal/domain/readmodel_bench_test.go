package domain_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
)

// BenchmarkApply measures the read model's side of a replay, without Kafka and
// decoding: 50,000 events of the example domain (1,000 users), decoded beforehand,
// applied in batches of 1,000, one transaction each, as the runtime applies one
// partition's batches. "rows" is the example domain on the row API, "exec" the
// same read model on Exec; both end equal to the fold. Each reports events/s: compare
// them as a ratio.
func BenchmarkApply(b *testing.B) {
	const n, batch = 50000, 1000
	pool, _ := testenv.Postgres(b)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 7, Users: 1000})
	require.NoError(b, err)
	evs := make([]events.Event, n)
	ds := make([]events.Decoded, n)
	reg := domain.Registry()
	for i := range evs {
		evs[i] = g.Next()
		ds[i], err = reg.Decode(evs[i])
		require.NoError(b, err)
	}
	want, err := domain.Fold(reg, evs)
	require.NoError(b, err)
	ctx := context.Background()
	run := func(b *testing.B, mk func(string, int) (*readmodel.Projection, error)) {
		for b.Loop() {
			var rnd [4]byte
			_, _ = rand.Read(rnd[:])
			p, err := mk("bench"+hex.EncodeToString(rnd[:]), 1)
			require.NoError(b, err)
			fw := "projector_bench_" + hex.EncodeToString(rnd[:])
			b.Cleanup(func() {
				_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+fw+" CASCADE; DROP SCHEMA IF EXISTS "+p.Schema()+" CASCADE")
			})
			require.NoError(b, readmodel.Setup(ctx, pool, fw, p))
			start := time.Now()
			for i := 0; i < n; i += batch {
				require.NoError(b, applyBatch(ctx, pool, p, ds[i:min(i+batch, n)]))
			}
			b.ReportMetric(n/time.Since(start).Seconds(), "events/s")
			got, err := domain.Load(ctx, pool, p.Schema())
			require.NoError(b, err)
			require.Empty(b, domain.Diff(want, got, 5))
		}
	}
	b.Run("rows", func(b *testing.B) { run(b, domain.NewProjection) })
	b.Run("exec", func(b *testing.B) { run(b, domain.NewExecProjection) })
}

func applyBatch(ctx context.Context, pool interface {
	Begin(context.Context) (pgx.Tx, error)
}, p *readmodel.Projection, ds []events.Decoded) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+pgx.Identifier{p.Schema()}.Sanitize()); err != nil {
		return err
	}
	w := readmodel.NewWriter(tx)
	if err := p.Preload(ctx, w, ds); err != nil {
		return err
	}
	for _, d := range ds {
		if err := p.Apply(ctx, w, d); err != nil {
			return err
		}
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
