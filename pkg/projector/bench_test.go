package projector_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
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
	b.Run("projector", func(b *testing.B) {
		for b.Loop() {
			p := f.domainProjection()
			start := time.Now()
			_, stop := f.start(f.config(p))
			f.waitCaughtUp(p, 5*time.Minute)
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
			stop()
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
			p := f.domainProjection()
			cfg := f.config(p)
			cfg.Effects, cfg.Ledger = []*sideeffects.Effect{eff}, ledger
			start := time.Now()
			_, stop := f.start(cfg)
			waitFor(b, 5*time.Minute, "every effect run", func() bool { return runs.Load() >= n })
			secs := time.Since(start).Seconds()
			stop()
			batches := float64(n) / float64(projector.EffectBatchSizeDefault)
			b.ReportMetric(float64(n)/secs, "effects/s")
			b.ReportMetric(float64(ledger.RoundTrips())/batches, "redis-round-trips/batch")
		}
	})
}
