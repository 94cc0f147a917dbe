package effects

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/offsets"
)

// dispatcher runs every effect of one partition: one lane per effect.
type dispatcher struct {
	e      *Engine
	part   int
	lanes  []*fxLane
	feed   *Feed
	rp     *lane.Lane   // where reader stands
	reader *lane.Reader // reads the log where the feed does not reach; open only meanwhile
}

// Run claims the partition's effect watermarks for owner, then runs the effects
// over what the read model commits, handed over by feed, until ctx ends (the
// generation). It stops the feed when it returns: the worker must not wait for it.
func (e *Engine) Run(ctx context.Context, owner offsets.Owner, part int, feed *Feed) error {
	defer feed.stop()
	log := e.cfg.Log.With(zap.Int("partition", part), zap.Int32("generation", owner.Generation))
	d := &dispatcher{e: e, part: part, feed: feed}
	defer func() {
		for _, ln := range d.lanes {
			ln.p.Status.Set(func(s *lane.PartitionStatus) { s.State, s.InFlight = lane.StateReleased, 0 })
		}
	}()
	for _, eff := range e.cfg.Effects {
		ln, err := e.claimLane(ctx, owner, part, eff, log)
		if err != nil {
			return err
		}
		ln.feed = feed
		d.lanes = append(d.lanes, ln)
	}
	if err := d.checkLogStart(ctx); err != nil {
		return err
	}
	rp := &lane.Lane{Key: offsets.Key{Projection: e.cfg.Projection.Name(), Version: e.cfg.Projection.Version(), Topic: e.env.Topic, Partition: part},
		Owner: owner, Status: d.lanes[0].p.Status, Log: log.With(zap.String("reader", "effects"))}
	d.rp, d.reader = rp, e.env.NewReader(rp)
	defer d.reader.Close()
	return d.loop(ctx)
}

// loop takes the feed's batches, or reads the log where the feed does not reach,
// and runs the effects over them; idle, it waits for the next commit, and every
// RetryPoll runs the parked effects an operator asked to retry.
func (d *dispatcher) loop(ctx context.Context) error {
	e := d.e
	poll := time.NewTicker(e.cfg.RetryPoll)
	defer poll.Stop()
	lastPoll := time.Now()
	for ctx.Err() == nil {
		pos := d.position()
		batches, upTo := d.feed.take(pos)
		var err error
		switch {
		case len(batches) > 0:
			d.reader.Close() // caught up: the feed has the rest
			d.state(lane.StateLive)
			err = d.run(ctx, joinBatches(batches), batches[len(batches)-1].next)
		case upTo > pos:
			d.state(lane.StateCatchingUp)
			err = d.catchUp(ctx, pos, upTo)
		default:
			d.state(lane.StateLive)
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
		if time.Since(lastPoll) >= e.cfg.RetryPoll {
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
	pos := d.lanes[0].p.Next
	for _, ln := range d.lanes[1:] {
		pos = min(pos, ln.p.Next)
	}
	return pos
}

// state records each lane's state and where it stands against the read model.
func (d *dispatcher) state(state string) {
	committed := d.feed.position()
	for _, ln := range d.lanes {
		ln.p.Status.Set(func(s *lane.PartitionStatus) {
			s.State, s.Next, s.HighWater = state, ln.p.Next, max(committed, 0)
			s.Lag = max(0, committed-ln.p.Next)
		})
	}
}

// run runs every lane that has not passed next over entries, the lanes at once.
func (d *dispatcher) run(ctx context.Context, entries []Entry, next int64) error {
	var todo []*fxLane
	for _, ln := range d.lanes {
		if ln.p.Next < next {
			todo = append(todo, ln)
		}
	}
	if len(todo) == 1 {
		return d.e.effectBatch(ctx, todo[0], entries, next)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, ln := range todo {
		g.Go(func() error { return d.e.effectBatch(gctx, ln, entries, next) })
	}
	return g.Wait()
}

// catchUp passes the lanes at pos over the fold's span there when all its events
// are older than their horizons (passOld); otherwise it reads up to a batch of
// committed events from pos (never at or beyond upTo, the read model's position, nor,
// below the feed's first span, past that span's start) from the log, once for every
// lane, decrypts them once, and runs the lanes over them.
func (d *dispatcher) catchUp(ctx context.Context, pos, upTo int64) error {
	s, ok, nextStart := d.feed.spanAt(pos)
	switch {
	case ok:
		if passed, err := d.passOld(ctx, s); passed || err != nil {
			return err
		}
		// A span that is not passed is read in full batches, as the log would be
		// without spans: capped at each span's end, a replay in small folds (a
		// low FoldRows) made the effects catch up in as many small batches.
	case nextStart > pos:
		upTo = min(upTo, nextStart) // below the first span: read up to it, and meet it at its start
	}
	msgs, next := d.read(ctx, pos, upTo)
	if next <= pos {
		return nil
	}
	d.e.cfg.LogReads.Add(float64(len(msgs)))
	var entries []Entry
	if err := d.e.env.Do(ctx, d.lanes[0].p, "read personal data keys", func(ctx context.Context) error {
		var err error
		entries, err = d.e.prepare(ctx, msgs)
		return err
	}); err != nil {
		return err
	}
	return d.run(ctx, entries, next)
}

// passOld moves the lanes standing at s's start whose horizon is after s's newest
// event to its end, unread, each event of a type the effect reacts to counted as
// suppressed by the horizon. It reports whether any lane moved.
func (d *dispatcher) passOld(ctx context.Context, s Span) (bool, error) {
	var old []*fxLane
	for _, ln := range d.lanes {
		if ln.p.Next == s.From && !s.Newest.IsZero() && s.Newest.Before(ln.horizon) {
			old = append(old, ln)
		}
	}
	for _, ln := range old {
		if err := d.e.passLane(ctx, ln, s); err != nil {
			return false, err
		}
	}
	return len(old) > 0, nil
}

// read returns the messages from pos below upTo, at most a batch, and the position
// after them. A read error is logged, the reader starts over, and read returns none.
func (d *dispatcher) read(ctx context.Context, pos, upTo int64) ([]kafka.Message, int64) {
	rd := d.reader
	if rd.IsOpen() && d.rp.Next != pos {
		rd.Close()
	}
	d.rp.Next = pos
	if !rd.IsOpen() {
		if err := rd.Open(); err != nil {
			rd.Failed(ctx, err)
			return nil, pos
		}
	}
	var msgs []kafka.Message
	next := pos
	for len(msgs) < d.e.env.BatchSize && next < upTo {
		m, err := rd.Fetch(ctx, time.Second)
		if ctx.Err() != nil {
			return nil, pos
		}
		if errors.Is(err, context.DeadlineExceeded) {
			break // what is committed is in the log: this is a slow broker; go on with what came
		}
		if err != nil {
			rd.Failed(ctx, err)
			return nil, pos
		}
		switch {
		case m.Offset < next: // below the position (kafka-go #1398): drop
		case m.Offset >= upTo:
			// No record between the last one and the read model's position (offsets
			// a producer's transaction markers hold): the range is read. The reader
			// went past it; the next read opens it anew.
			rd.Close()
			next = upTo
		default:
			msgs = append(msgs, m)
			next = m.Offset + 1
		}
	}
	d.rp.Next = next
	return msgs, next
}

// housekeep runs the parked effects an operator asked to retry, and refreshes the
// claims of lanes that wrote nothing for a while, so that they are not taken for stale.
func (d *dispatcher) housekeep(ctx context.Context) error {
	e := d.e
	for _, ln := range d.lanes {
		if err := e.retryParkedEffects(ctx, ln); err != nil {
			return err
		}
		if time.Since(ln.wrote) < e.env.Offsets.StaleClaimAfter/4 {
			continue
		}
		ln.wrote = time.Now()
		if err := e.env.Touch(ctx, ln.p); err != nil {
			return err
		}
	}
	return nil
}

// checkLogStart moves the watermarks that lie below the log start up to it: the
// events before it are gone, and the read model cannot have committed them here.
func (d *dispatcher) checkLogStart(ctx context.Context) error {
	e := d.e
	first, _, err := e.env.Bounds(ctx, d.part)
	if err != nil {
		return err
	}
	for _, ln := range d.lanes {
		p := ln.p
		if p.Next >= first {
			continue
		}
		p.Log.Warn("the effect's watermark is below the log start; events before it are gone", zap.Int64("watermark", p.Next), zap.Int64("log_start", first))
		if err := e.env.Do(ctx, p, "move watermark to the log start", func(ctx context.Context) error {
			sql, args := store.AdvanceOffset(e.env.Schema, store.Partition(p.Key), p.Owner.Generation, p.Owner.Member, p.Next, first, 0)
			tag, err := e.env.Pool.Exec(ctx, sql, args...)
			if err == nil && tag.RowsAffected() != 1 {
				return offsets.ErrFenced
			}
			return err
		}); err != nil {
			return err
		}
		p.Next = first
	}
	return nil
}

// joinBatches returns the entries of contiguous batches as one slice.
func joinBatches(batches []fxBatch) []Entry {
	if len(batches) == 1 {
		return batches[0].entries
	}
	n := 0
	for _, b := range batches {
		n += len(b.entries)
	}
	out := make([]Entry, 0, n)
	for _, b := range batches {
		out = append(out, b.entries...)
	}
	return out
}

// ReactsTo reports whether any of the effects reacts to the event type.
func (e *Engine) ReactsTo(eventType string) bool {
	for _, eff := range e.cfg.Effects {
		if eff.ReactsTo(eventType) {
			return true
		}
	}
	return false
}
