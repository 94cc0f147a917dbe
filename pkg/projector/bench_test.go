package projector_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
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
