package projector

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/internal/effects"
	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/pkg/offsets"
)

// Effect outcomes, as counted in metrics and Status.Effects.
const (
	FxFired            = effects.Fired
	FxSuppressedLedger = effects.SuppressedLedger
	FxSuppressedHorzn  = effects.SuppressedHorizon
	FxParked           = effects.Parked
	FxRetried          = effects.Retried
	FxLeaseLost        = effects.LeaseLost
	FxForgotten        = effects.Forgotten // the subject's personal data is shredded
)

// fxFeedBatches is the feed's bound, in read-model batches (Config.BatchSize each).
const fxFeedBatches = 2

// newEffects returns the engine of the runner's effects (internal/effects), nil
// without effects.
func (r *Runner) newEffects() *effects.Engine {
	if len(r.cfg.Effects) == 0 {
		return nil
	}
	return effects.New(effects.Config{
		Projection: r.cfg.Projection, Schema: r.cfg.Schema, Effects: r.cfg.Effects, Ledger: r.cfg.Ledger,
		Horizon: r.cfg.EffectHorizon, Concurrency: r.cfg.EffectConcurrency, MaxAttempts: r.cfg.EffectMaxAttempts,
		ReserveBatch: r.cfg.EffectBatchSize, FeedBatches: fxFeedBatches, DrainTimeout: r.cfg.DrainTimeout, RetryPoll: r.cfg.RetryPoll,
		Fire:  retry.Policy{Min: r.cfg.RetryBackoffMin, Max: r.cfg.RetryBackoffMax},
		Board: r.status, Runs: r.metrics.Effects, LogReads: r.metrics.EffectLogs, Log: r.log,
	}, r.env)
}

// runPartition runs one partition for one generation: its read-model worker and,
// when the projection has effects, the partition's effect dispatcher beside it, fed
// by the worker. Either one's error ends both.
func (r *Runner) runPartition(ctx context.Context, gen *kafka.Generation, part int) error {
	if r.fx == nil {
		return r.work(ctx, gen, part, nil)
	}
	feed := r.fx.NewFeed()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := r.fx.Run(gctx, offsets.Owner{Generation: gen.ID, Member: gen.MemberID}, part, feed); err != nil {
			return fmt.Errorf("effects: %w", err)
		}
		return nil
	})
	g.Go(func() error { return r.work(gctx, gen, part, feed) })
	return g.Wait()
}

// publish hands a committed batch, which moved the partition from from to its
// position, to the partition's effects (see effects.Feed.Publish).
func (r *Runner) publish(ctx context.Context, p *partition, from int64, entries []judge.Entry) {
	if p.fx == nil {
		return
	}
	if entries == nil {
		p.fx.Publish(ctx, from, p.Next, nil, nil)
		return
	}
	fx := make([]effects.Entry, len(entries))
	for i := range entries {
		e := &entries[i]
		fx[i] = effects.Entry{Msg: e.Msg, Event: e.Event, Decoded: e.Decoded, Unread: e.Unread}
	}
	p.fx.Publish(ctx, from, p.Next, fx, p.effectsWait())
}

// effectsWait returns how the worker waits for the partition's effects when they
// have not taken the last batches yet: while the partition replays history, it waits
// for them (the log is read once) and says so on its status; live (its lag within
// ReadyLag), it does not wait at all (nil) — the read model stays fresh, and the
// effects read what they missed from the log.
func (p *partition) effectsWait() func(waiting bool) {
	live := false
	p.Status.Set(func(s *PartitionStatus) { live = s.State == StateLive })
	if live {
		return nil
	}
	return func(waiting bool) {
		p.Status.Set(func(s *PartitionStatus) {
			s.Waiting = ""
			if waiting {
				s.Waiting = "the partition's effects: while it replays, the read model waits for them to take what it committed"
			}
		})
	}
}

// opens reports whether the worker opens an event type's personal data: the read
// model's types, and the types its effects react to, which run on the same entries.
func (r *Runner) opens(eventType string) bool {
	return r.cfg.Projection.Registry().Known(eventType) || (r.fx != nil && r.fx.ReactsTo(eventType))
}
