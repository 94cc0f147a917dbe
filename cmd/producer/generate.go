package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/events"
)

// Defaults for generate.
const (
	generateEventsDefault = 10000
	generateChunkDefault  = 12000
)

// generateUsage is generate's help.
const generateUsage = `producer generate: publish a deterministic workload of the example domain
(UserRegistered, UserChangedPassword, UserPublishedAnArticle, ArticleDeleted,
UserDeleted), with per-aggregate sequence numbers. The same --seed, --users,
--start and --step give the same events — ids, data, times and order.
Prints a JSON summary: events, seconds, events/s.`

func runGenerate(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	var c common
	var users, n, chunk int
	var seed uint64
	var rate float64
	var start, prefix string
	var step time.Duration
	f := cli.NewFlags("generate", generateUsage)
	c.register(f)
	f.Int(&users, "users", "", domain.UsersDefault, "user slots (aggregates)")
	f.Int(&n, "events", "", generateEventsDefault, "events to publish")
	f.Uint64(&seed, "seed", "", 1, "random seed")
	f.Float64(&rate, "rate", "", 0, "events per second; 0 = as fast as possible")
	f.String(&start, "start", "", domain.StartDefault.Format(time.RFC3339), "time of the first event (RFC 3339), or 'now'")
	f.Duration(&step, "step", "", domain.StepDefault, "time between events")
	f.Int(&chunk, "chunk", "", generateChunkDefault, "events per publish call")
	f.String(&prefix, "prefix", "", "user", "prefix of user ids: workloads with different prefixes touch different aggregates")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	if n < 0 || chunk < 1 || rate < 0 || users < 1 {
		return fmt.Errorf("--events %d, --chunk %d, --rate %g, --users %d: events and rate must not be negative, chunk and users at least 1", n, chunk, rate, users)
	}
	t0 := time.Now().UTC()
	if start != "now" {
		t, err := time.Parse(time.RFC3339, start)
		if err != nil {
			return fmt.Errorf("--start %q: want RFC 3339 or 'now'", start)
		}
		t0 = t
	}
	gen, err := domain.NewGenerator(domain.GeneratorConfig{Seed: seed, Users: users, Start: t0, Step: step, Prefix: prefix})
	if err != nil {
		return err
	}
	if rate > 0 {
		chunk = max(1, min(chunk, int(rate/20))) // ~20 sends a second keeps the pace smooth
	}
	pub, log, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	_ = log

	// One goroutine generates, the other publishes in order, so encoding the next
	// chunk overlaps the broker's acknowledgement of this one.
	chunks := make(chan []events.Event, 2)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return generateChunks(gctx, gen, n, chunk, chunks) })
	began := time.Now()
	sent := 0
	progress := cli.IsTerminal(os.Stderr)
	g.Go(func() error {
		for b := range chunks {
			if _, err := pub.Publish(gctx, b...); err != nil {
				return fmt.Errorf("after %d events: %w", sent, err)
			}
			sent += len(b)
			if progress {
				_, _ = fmt.Fprintf(stderr, "\rgenerate: %d/%d events (%.0f/s)   ", sent, n, float64(sent)/time.Since(began).Seconds())
			}
			if err := pace(gctx, began, sent, rate); err != nil {
				return err
			}
		}
		return nil
	})
	err = g.Wait()
	if progress {
		_, _ = fmt.Fprintln(stderr)
	}
	secs := time.Since(began).Seconds()
	summary := map[string]any{"topic": c.topic, "events": sent, "seconds": round(secs), "events_per_sec": round(float64(sent) / max(secs, 1e-9)), "seed": seed, "users": users}
	if jerr := json.NewEncoder(stdout).Encode(summary); jerr != nil && err == nil {
		err = jerr
	}
	return err
}

func round(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// generateChunks sends n events of gen to chunks, chunk at a time, and closes it.
func generateChunks(ctx context.Context, gen *domain.Generator, n, chunk int, chunks chan<- []events.Event) error {
	defer close(chunks)
	for left := n; left > 0; {
		k := min(chunk, left)
		b := make([]events.Event, k)
		for i := range b {
			b[i] = gen.Next()
		}
		left -= k
		select {
		case chunks <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// pace waits until sent events are due at rate per second from began (rate 0: as
// fast as possible).
func pace(ctx context.Context, began time.Time, sent int, rate float64) error {
	if rate <= 0 {
		return nil
	}
	due := began.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
