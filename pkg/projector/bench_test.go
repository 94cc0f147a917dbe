package projector_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/roundtrips"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/sideeffects"
)

// BenchmarkReplay measures replays from zero of 100,000 events of the example domain
// (12 partitions) beside a baseline in the same run on the same topic: raw kafka-go
// consumption, discarding the messages. Each reports events/s; compare the two as a
// ratio. make bench runs it.
func BenchmarkReplay(b *testing.B) {
	const n = 100000
	f := newFixture(b, 12)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 1, Users: 5000})
	if err != nil {
		b.Fatal(err)
	}
	f.generate(g, n)

	b.Run("raw-consume", func(b *testing.B) {
		for b.Loop() {
			start := time.Now()
			got := 0
			for p, end := range f.endOffsets() {
				if end == 0 {
					continue
				}
				r := kafka.NewReader(kafka.ReaderConfig{Brokers: testenv.Kafka(b), Topic: f.topic, Partition: p,
					MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond, QueueCapacity: 2000})
				for {
					m, err := r.FetchMessage(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					got++
					if m.Offset >= end-1 {
						break
					}
				}
				_ = r.Close()
			}
			b.ReportMetric(float64(got)/time.Since(start).Seconds(), "events/s")
		}
	})
	once := func(b *testing.B, mk func(string, int) (*readmodel.Projection, error)) float64 {
		p, err := mk(f.projectionName(), 1)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		_, stop := f.start(f.config(p))
		f.waitCaughtUp(p, 5*time.Minute)
		rate := float64(n) / time.Since(start).Seconds()
		stop()
		return rate
	}
	b.Run("projector", func(b *testing.B) {
		for b.Loop() {
			b.ReportMetric(once(b, domain.NewProjection), "events/s")
		}
	})
	// The example domain on the row API against the same read model with every
	// handler on Exec (one statement per change, as before the row API), replayed in
	// turn so that both see the same machine: each iteration reports both rates and
	// their ratio.
	b.Run("rows-vs-exec", func(b *testing.B) {
		for b.Loop() {
			exec := once(b, domain.NewExecProjection)
			rows := once(b, domain.NewProjection)
			b.ReportMetric(rows, "rows-events/s")
			b.ReportMetric(exec, "exec-events/s")
			b.ReportMetric(rows/exec, "rows/exec")
		}
	})
}

// BenchmarkEffects measures effect runs per second with a no-op sink over 20,000
// events (every event fires), the ledger's round trips per effect batch, and a
// baseline in the same run: raw pipelined SET NX of as many keys, 500 a round trip.
func BenchmarkEffects(b *testing.B) {
	const n = 20000
	f := newFixture(b, 12)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 1, Users: 5000, Start: time.Now().UTC()})
	if err != nil {
		b.Fatal(err)
	}
	f.generate(g, n)
	rc, prefix := testenv.Redis(b)
	rt := roundtrips.On(rc) // the ledger's, in the effect benchmark: nothing else uses rc meanwhile

	b.Run("redis-setnx-baseline", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			for k := 0; k < n; k += 500 {
				pipe := rc.Pipeline()
				for j := k; j < min(k+500, n); j++ {
					pipe.SetNX(context.Background(), fmt.Sprintf("%sbase:%d:%d", prefix, i, j), "x", time.Minute)
				}
				if _, err := pipe.Exec(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "keys/s")
		}
	})
	b.Run("projector-noop-effect", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			reg := domain.Registry()
			eff, err := sideeffects.Define("noop", reg)
			if err != nil {
				b.Fatal(err)
			}
			var runs atomic.Int64
			noop := func() { runs.Add(1) }
			sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserRegistered) error { noop(); return nil })
			sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserChangedPassword) error {
				noop()
				return nil
			})
			sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserPublishedAnArticle) error {
				noop()
				return nil
			})
			sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.ArticleDeleted) error { noop(); return nil })
			sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserDeleted) error { noop(); return nil })
			ledger, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: rc, Namespace: fmt.Sprintf("%sfx%d", prefix, i)})
			if err != nil {
				b.Fatal(err)
			}
			trips := rt.Load()
			p := f.domainProjection()
			cfg := f.config(p)
			cfg.Effects, cfg.Ledger = []*sideeffects.Effect{eff}, ledger
			start := time.Now()
			_, stop := f.start(cfg)
			testenv.WaitFor(b, 5*time.Minute, "every effect run", func() bool { return runs.Load() >= n })
			secs := time.Since(start).Seconds()
			stop()
			batches := float64(n) / float64(projector.EffectBatchSizeDefault)
			b.ReportMetric(float64(n)/secs, "effects/s")
			b.ReportMetric(float64(rt.Load()-trips)/batches, "redis-round-trips/batch")
		}
	})
}

// BenchmarkPersonalData measures what crypto-shredding costs: publishing 100,000
// events of the example domain (12 partitions) with their personal fields sealed
// (per-subject keys created in the key store, AES-256-GCM) against publishing the
// same events plain, and replaying each topic from zero, decrypting against not. The
// "-plain" and "-sealed" pairs run in the same process against the same stack:
// compare them as ratios.
func BenchmarkPersonalData(b *testing.B) {
	const n = 100000
	plainF, sealedF := newFixture(b, 12), newFixture(b, 12)
	keys := privateKeys(b, plainF.pool)
	reg := domain.Registry()
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 1, Users: 5000})
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = g.Next()
	}
	const chunk = 5000 // as producer generate --chunk
	publish := func(b *testing.B, f *fixture, seal bool) {
		for b.Loop() {
			start := time.Now()
			for i := 0; i < n; i += chunk {
				batch := append([]events.Event(nil), evs[i:min(i+chunk, n)]...)
				if seal {
					if err := shred.Seal(context.Background(), keys, reg, batch); err != nil {
						b.Fatal(err)
					}
				}
				f.publish(batch...)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		}
	}
	b.Run("publish-plain", func(b *testing.B) { publish(b, plainF, false) })
	b.Run("publish-sealed", func(b *testing.B) { publish(b, sealedF, true) })
	replay := func(b *testing.B, f *fixture, withKeys bool) {
		for b.Loop() {
			p := f.domainProjection()
			cfg := f.config(p)
			if withKeys {
				cfg.Keys = keys
			}
			start := time.Now()
			_, stop := f.start(cfg)
			f.waitCaughtUp(p, 5*time.Minute)
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
			stop()
		}
	}
	b.Run("replay-plain", func(b *testing.B) { replay(b, plainF, false) })
	b.Run("replay-sealed", func(b *testing.B) { replay(b, sealedF, true) })
}
