package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/pkg/offsets"
)

// fxFeedBatches is the feed's bound, in read-model batches (Config.BatchSize each).
const fxFeedBatches = 2

// runPartition runs one partition for one generation: its read-model worker and,
// when the projection has effects, the partition's effect dispatcher beside it, fed
// by the worker. Either one's error ends both.
func (r *Runner) runPartition(ctx context.Context, gen *kafka.Generation, part int) error {
	if len(r.cfg.Effects) == 0 {
		return r.work(ctx, gen, part, nil)
	}
	feed := newFxFeed(fxFeedBatches * r.cfg.BatchSize)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer feed.stop()
		if err := r.dispatchEffects(gctx, gen, part, feed); err != nil {
			return fmt.Errorf("effects: %w", err)
		}
		return nil
	})
	g.Go(func() error { return r.work(gctx, gen, part, feed) })
	return g.Wait()
}

// effectsWait returns how the worker waits for the partition's effects when they
// have not taken the last batches yet: while the partition replays history, it waits
// for them (the log is read once) and says so on its status; live (its lag within
// ReadyLag), it does not wait at all (nil) — the read model stays fresh, and the
// effects read what they missed from the log.
func (p *partition) effectsWait() func(waiting bool) {
	live := false
	p.status.set(func(s *PartitionStatus) { live = s.State == StateLive })
	if live {
		return nil
	}
	return func(waiting bool) {
		p.status.set(func(s *PartitionStatus) {
			s.Waiting = ""
			if waiting {
				s.Waiting = "the partition's effects: while it replays, the read model waits for them to take what it committed"
			}
		})
	}
}

// dispatcher runs every effect of one partition: one lane per effect.
type dispatcher struct {
	r      *Runner
	part   int
	lanes  []*fxLane
	feed   *fxFeed
	reader *partitionReader // reads the log where the feed does not reach; open only meanwhile
}

// dispatchEffects claims the partition's effect watermarks, then runs the effects
// over what the read model commits, until the generation ends.
func (r *Runner) dispatchEffects(ctx context.Context, gen *kafka.Generation, part int, feed *fxFeed) error {
	owner := offsets.Owner{Generation: gen.ID, Member: gen.MemberID}
	log := r.log.With(zap.Int("partition", part), zap.Int32("generation", gen.ID))
	d := &dispatcher{r: r, part: part, feed: feed}
	defer func() {
		for _, ln := range d.lanes {
			ln.p.status.set(func(s *PartitionStatus) { s.State, s.InFlight = StateReleased, 0 })
		}
	}()
	for _, eff := range r.cfg.Effects {
		ln, err := r.claimLane(ctx, owner, part, eff, log)
		if err != nil {
			return err
		}
		ln.feed = feed
		d.lanes = append(d.lanes, ln)
	}
	if err := d.checkLogStart(ctx); err != nil {
		return err
	}
	rp := &partition{key: offsets.Key{Projection: r.cfg.Projection.Name(), Version: r.cfg.Projection.Version(), Topic: r.cfg.Topic, Partition: part},
		owner: owner, status: d.lanes[0].p.status, log: log.With(zap.String("reader", "effects"))}
	d.reader = r.newPartitionReader(rp)
	defer d.reader.close()
	return d.loop(ctx)
}

// loop takes the feed's batches, or reads the log where the feed does not reach,
// and runs the effects over them; idle, it waits for the next commit, and every
// RetryPoll runs the parked effects an operator asked to retry.
func (d *dispatcher) loop(ctx context.Context) error {
	r := d.r
	poll := time.NewTicker(r.cfg.RetryPoll)
	defer poll.Stop()
	lastPoll := time.Now()
	for ctx.Err() == nil {
		pos := d.position()
		batches, upTo := d.feed.take(pos)
		var err error
		switch {
		case len(batches) > 0:
			d.reader.close() // caught up: the feed has the rest
			d.state(StateLive)
			err = d.run(ctx, joinBatches(batches), batches[len(batches)-1].next)
		case upTo > pos:
			d.state(StateCatchingUp)
			err = d.catchUp(ctx, pos, upTo)
		default:
			d.state(StateLive)
			select {
			case <-ctx.Done():
				return nil
			case <-d.feed.wake:
			case <-poll.C:
			}
		}
		if errors.Is(err, errStopping) {
			return nil // the generation ended; the runs in flight finished and were marked
		}
		if err != nil {
			return err
		}
		if time.Since(lastPoll) >= r.cfg.RetryPoll {
			lastPoll = time.Now()
			if err := d.housekeep(ctx); err != nil {
				if errors.Is(err, errStopping) {
					return nil
				}
				return err
			}
		}
	}
	return nil
}

// position is where the slowest lane stands: everything below it ran for every effect.
func (d *dispatcher) position() int64 {
	pos := d.lanes[0].p.next
	for _, ln := range d.lanes[1:] {
		pos = min(pos, ln.p.next)
	}
	return pos
}

// state records each lane's state and where it stands against the read model.
func (d *dispatcher) state(state string) {
	committed := d.feed.position()
	for _, ln := range d.lanes {
		ln.p.status.set(func(s *PartitionStatus) {
			s.State, s.Next, s.HighWater = state, ln.p.next, max(committed, 0)
			s.Lag = max(0, committed-ln.p.next)
		})
	}
}

// run runs every lane that has not passed next over entries, the lanes at once.
func (d *dispatcher) run(ctx context.Context, entries []entry, next int64) error {
	var todo []*fxLane
	for _, ln := range d.lanes {
		if ln.p.next < next {
			todo = append(todo, ln)
		}
	}
	if len(todo) == 1 {
		return d.r.effectBatch(ctx, todo[0], entries, next)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, ln := range todo {
		g.Go(func() error { return d.r.effectBatch(gctx, ln, entries, next) })
	}
	return g.Wait()
}

// catchUp reads up to a batch of committed events from pos (never at or beyond upTo,
// the read model's position) from the log, once for every lane, decrypts them once,
// and runs the lanes over them.
func (d *dispatcher) catchUp(ctx context.Context, pos, upTo int64) error {
	msgs, next := d.read(ctx, pos, upTo)
	if next <= pos {
		return nil
	}
	var entries []entry
	if err := d.r.retry(ctx, d.lanes[0].p, "read personal data keys", func(ctx context.Context) error {
		var err error
		entries, err = d.r.prepareFor(ctx, msgs, d.r.effectsReactTo, d.r.effectsDecode)
		return err
	}); err != nil {
		return err
	}
	return d.run(ctx, entries, next)
}

// read returns the messages from pos below upTo, at most a batch, and the position
// after them. A read error is logged, the reader starts over, and read returns none.
func (d *dispatcher) read(ctx context.Context, pos, upTo int64) ([]kafka.Message, int64) {
	rd := d.reader
	if rd.reader != nil && rd.p.next != pos {
		rd.close()
	}
	rd.p.next = pos
	if rd.reader == nil {
		if err := rd.open(); err != nil {
			rd.failed(ctx, err)
			return nil, pos
		}
	}
	var msgs []kafka.Message
	next := pos
	for len(msgs) < d.r.cfg.BatchSize && next < upTo {
		wait, cancel := context.WithTimeout(ctx, time.Second)
		m, err := rd.reader.FetchMessage(wait)
		cancel()
		if ctx.Err() != nil {
			return nil, pos
		}
		if errors.Is(err, context.DeadlineExceeded) {
			break // what is committed is in the log: this is a slow broker; go on with what came
		}
		if err != nil {
			rd.failed(ctx, err)
			return nil, pos
		}
		switch {
		case m.Offset < next: // below the position (kafka-go #1398): drop
		case m.Offset >= upTo:
			// No record between the last one and the read model's position (offsets
			// a producer's transaction markers hold): the range is read. The reader
			// went past it; the next read opens it anew.
			rd.close()
			next = upTo
		default:
			msgs = append(msgs, m)
			next = m.Offset + 1
		}
	}
	rd.p.next = next
	return msgs, next
}

// housekeep runs the parked effects an operator asked to retry, and refreshes the
// claims of lanes that wrote nothing for a while, so that they are not taken for stale.
func (d *dispatcher) housekeep(ctx context.Context) error {
	r := d.r
	for _, ln := range d.lanes {
		if err := r.retryParkedEffects(ctx, ln); err != nil {
			return err
		}
		if time.Since(ln.wrote) < r.offsets.StaleClaimAfter/4 {
			continue
		}
		ln.wrote = time.Now()
		if err := r.retry(ctx, ln.p, "refresh claim", func(ctx context.Context) error {
			return r.offsets.Touch(ctx, r.cfg.Pool, ln.p.key, ln.p.owner)
		}); err != nil {
			return err
		}
	}
	return nil
}

// checkLogStart moves the watermarks that lie below the log start up to it: the
// events before it are gone, and the read model cannot have committed them here.
func (d *dispatcher) checkLogStart(ctx context.Context) error {
	r := d.r
	first, _, err := r.bounds(ctx, d.part)
	if err != nil {
		return err
	}
	for _, ln := range d.lanes {
		p := ln.p
		if p.next >= first {
			continue
		}
		p.log.Warn("the effect's watermark is below the log start; events before it are gone", zap.Int64("watermark", p.next), zap.Int64("log_start", first))
		if err := r.retry(ctx, p, "move watermark to the log start", func(ctx context.Context) error {
			sql, args := r.offsets.AdvanceSQL(p.key, p.owner, p.next, first, 0)
			tag, err := r.cfg.Pool.Exec(ctx, sql, args...)
			if err == nil && tag.RowsAffected() != 1 {
				return offsets.ErrFenced
			}
			return err
		}); err != nil {
			return err
		}
		p.next = first
	}
	return nil
}

// joinBatches returns the entries of contiguous batches as one slice.
func joinBatches(batches []fxBatch) []entry {
	if len(batches) == 1 {
		return batches[0].entries
	}
	n := 0
	for _, b := range batches {
		n += len(b.entries)
	}
	out := make([]entry, 0, n)
	for _, b := range batches {
		out = append(out, b.entries...)
	}
	return out
}

// effectsReactTo reports whether any of the runner's effects reacts to the event type.
func (r *Runner) effectsReactTo(eventType string) bool {
	for _, eff := range r.cfg.Effects {
		if eff.ReactsTo(eventType) {
			return true
		}
	}
	return false
}

// effectsDecode reports whether events of the type are decoded (with the
// projection's registry) for the effects, once for every lane: the types the
// projection knows and an effect reacts to.
func (r *Runner) effectsDecode(eventType string) bool {
	return r.cfg.Projection.Registry().Known(eventType) && r.effectsReactTo(eventType)
}

// opens reports whether the worker opens an event type's personal data: the read
// model's types, and the types its effects react to, which run on the same entries.
func (r *Runner) opens(eventType string) bool {
	return r.cfg.Projection.Registry().Known(eventType) || r.effectsReactTo(eventType)
}
