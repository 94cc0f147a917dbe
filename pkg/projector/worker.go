package projector

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

// partition is one worker's state: what it owns and where it stands.
type partition struct {
	key    offsets.Key
	owner  offsets.Owner
	next   int64            // the next offset to apply; stored in PostgreSQL
	parked map[string]int64 // subjects with parked events -> first parked offset
	layout *eventlog.Layout // the topic's partitioning history, to find misrouted records
	status *partStatus
	log    *zap.Logger
	fx     *fxFeed // where committed batches go to the partition's effects; nil without effects
}

// ErrHistoryGone is returned when a stored offset lies below the partition's first
// offset: events the read model never saw were deleted from the log.
var ErrHistoryGone = errors.New("stored offset is below the log start: events were deleted before this read model applied them")

// work runs one partition's read model for one generation: claim, read, apply,
// until the generation ends (ctx) or the partition is fenced, handing each committed
// batch to feed (nil: no effects). A nil return means the generation ended.
func (r *Runner) work(ctx context.Context, gen *kafka.Generation, part int, feed *fxFeed) error {
	p := &partition{
		key:    offsets.Key{Projection: r.cfg.Projection.Name(), Version: r.cfg.Projection.Version(), Topic: r.cfg.Topic, Partition: part},
		owner:  offsets.Owner{Generation: gen.ID, Member: gen.MemberID},
		status: r.status.partition(part),
		log:    r.log.With(zap.Int("partition", part), zap.Int32("generation", gen.ID)),
		fx:     feed,
	}
	p.status.set(func(s *PartitionStatus) { s.State = StateClaiming })
	defer p.status.set(func(s *PartitionStatus) { s.State = StateReleased })

	if err := r.claim(ctx, p); err != nil {
		return err
	}
	p.fx.claimed(p.next)
	if err := r.retry(ctx, p, "load parked", func(ctx context.Context) error { return r.loadParked(ctx, p) }); err != nil {
		return err
	}
	first, last, err := r.bounds(ctx, part)
	if err != nil {
		return err
	}
	if err := checkBounds(part, p.next, first, last); err != nil {
		return err
	}
	if p.layout, err = r.layout(ctx, gen.ID); err != nil {
		return err
	}
	p.status.set(func(s *PartitionStatus) {
		s.Next, s.HighWater = p.next, last
		s.Lag = max(0, last-p.next)
		s.State = StateReplaying
		if s.Lag <= r.readyLag {
			s.State = StateLive
		}
	})
	p.log.Info("partition claimed", zap.Int64("next_offset", p.next), zap.Int64("high_water", last), zap.Int("parked_aggregates", len(p.parked)))

	rd := r.newPartitionReader(p)
	defer rd.close()

	lastRetryPoll, lastTouch := time.Now(), time.Now()
	for {
		if r.cfg.StopAt != nil && p.next >= r.cfg.StopAt[part] {
			if err := r.waitAtStop(ctx, p, rd); err != nil || ctx.Err() != nil {
				return err
			}
			continue
		}
		msgs, err := rd.readBatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			continue // the reader logged it and starts over at p.next
		}
		// A reader may hand back records below the stored position (kafka-go #1398
		// after a rebalance, or a resync after an unknown commit): drop them.
		kept := msgs[:0]
		for _, m := range msgs {
			if m.Offset >= p.next && !r.beyondStop(part, m.Offset) {
				kept = append(kept, m)
			}
		}
		if len(kept) > 0 && kept[0].Offset > p.next {
			// kafka-go moves to the log start by itself on "offset out of range":
			// never skip events silently.
			first, last, err := r.bounds(ctx, part)
			if err != nil {
				return err
			}
			if err := checkBounds(part, p.next, first, last); err != nil {
				return err
			}
		}
		if len(kept) > 0 {
			lastTouch = time.Now()
			if err := r.applySplitting(ctx, p, kept); err != nil {
				return err
			}
		} else if len(msgs) == 0 {
			p.status.idle(p.next)
			r.observePartition(p)
			if time.Since(lastTouch) >= r.offsets.StaleClaimAfter/4 {
				// An idle owner keeps its claim fresh, so it is never taken for stale.
				lastTouch = time.Now()
				if err := r.retry(ctx, p, "refresh claim", func(ctx context.Context) error {
					return r.offsets.Touch(ctx, r.cfg.Pool, p.key, p.owner)
				}); err != nil {
					return err
				}
			}
		}
		if time.Since(lastRetryPoll) >= r.cfg.RetryPoll {
			lastRetryPoll = time.Now()
			if err := r.retryParked(ctx, p); err != nil {
				return err
			}
		}
	}
}

// waitAtStop is a bounded run's partition that got to its end: it reads no further
// (it read, and dropped, the rest of the log, a core's worth while other partitions
// and the effects caught up) and waits, its claim kept fresh, for the run to end.
func (r *Runner) waitAtStop(ctx context.Context, p *partition, rd *partitionReader) error {
	rd.close()
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(r.offsets.StaleClaimAfter / 4):
	}
	return r.retry(ctx, p, "refresh claim", func(ctx context.Context) error {
		return r.offsets.Touch(ctx, r.cfg.Pool, p.key, p.owner)
	})
}

// beyondStop reports whether offset lies past a bounded run's end.
func (r *Runner) beyondStop(part int, offset int64) bool {
	if r.cfg.StopAt == nil {
		return false
	}
	return offset >= r.cfg.StopAt[part]
}

// checkBounds refuses a stored position outside the partition: below its start
// (events deleted before they were applied) or beyond its end (the topic was
// deleted and created anew).
func checkBounds(part int, next, first, last int64) error {
	if next < first {
		return fmt.Errorf("partition %d: stored offset %d, log starts at %d: %w", part, next, first, ErrHistoryGone)
	}
	if next > last {
		return fmt.Errorf("partition %d: stored offset %d is beyond the log end %d: was the topic deleted and created again? %w",
			part, next, last, ErrHistoryGone)
	}
	return nil
}

// claim takes the partition over. A claim refused for a newer generation is retried
// within this generation rather than ending it (which would rebalance every
// partition of the member): if this member is the stale one, its generation ends.
func (r *Runner) claim(ctx context.Context, p *partition) error {
	wait := time.Second
	for {
		err := r.retry(ctx, p, "claim", func(ctx context.Context) error {
			next, err := r.offsets.Claim(ctx, r.cfg.Pool, p.key, p.owner)
			p.next = next
			return err
		})
		if !errors.Is(err, offsets.ErrFenced) {
			return err
		}
		p.log.Warn("claim refused: a newer generation holds the partition; waiting", zap.Duration("wait", wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// partitionReader is a kafka-go reader for one partition that starts over at the
// worker's position after a read error, instead of giving up: a broker restart is
// a transient fault like any other.
type partitionReader struct {
	r      *Runner
	p      *partition
	reader *kafka.Reader
	fails  int
}

func (r *Runner) newPartitionReader(p *partition) *partitionReader {
	return &partitionReader{r: r, p: p}
}

func (pr *partitionReader) open() error {
	pr.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers: pr.r.cfg.Brokers, Topic: pr.r.cfg.Topic, Partition: pr.p.key.Partition,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond,
		QueueCapacity: max(100, 2*pr.r.cfg.BatchSize), ReadBackoffMin: 50 * time.Millisecond, ReadBackoffMax: time.Second,
		MaxAttempts: 10,
		ErrorLogger: kafka.LoggerFunc(func(f string, a ...any) { pr.p.log.Sugar().Debugf("kafka reader: "+f, a...) }),
	})
	return pr.reader.SetOffset(pr.p.next)
}

func (pr *partitionReader) close() {
	if pr.reader != nil {
		_ = pr.reader.Close()
		pr.reader = nil
	}
}

// readBatch reads a batch from the worker's position. On a read error it logs,
// waits, closes the reader and returns the error; the next call reopens it.
func (pr *partitionReader) readBatch(ctx context.Context) ([]kafka.Message, error) {
	if pr.reader == nil {
		if err := pr.open(); err != nil {
			return nil, err
		}
	}
	msgs, err := pr.r.readBatch(ctx, pr.reader)
	if err == nil || ctx.Err() != nil {
		pr.fails = 0
		return msgs, err
	}
	pr.failed(ctx, err)
	return nil, err
}

// failed logs a read error, closes the reader (the next read reopens it at the
// position) and waits a little longer after each failure in a row.
func (pr *partitionReader) failed(ctx context.Context, err error) {
	pr.fails++
	pr.r.metrics.transient.Inc()
	if pr.fails == 1 || pr.fails%10 == 0 {
		pr.p.log.Warn("reading the partition failed; starting over at the stored position", zap.Int("attempt", pr.fails), zap.Error(err))
	}
	pr.close()
	select {
	case <-ctx.Done():
	case <-time.After(min(time.Duration(pr.fails)*250*time.Millisecond, 5*time.Second)):
	}
}

// readBatch waits up to a second for a first message, then gathers more until the
// batch is full or BatchTimeout has passed. An empty batch means the partition is idle.
func (r *Runner) readBatch(ctx context.Context, reader *kafka.Reader) ([]kafka.Message, error) {
	wait, cancel := context.WithTimeout(ctx, time.Second)
	m, err := reader.FetchMessage(wait)
	cancel()
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, nil
		}
		return nil, err
	}
	batch := make([]kafka.Message, 1, r.cfg.BatchSize)
	batch[0] = m
	fill, cancel := context.WithTimeout(ctx, r.cfg.BatchTimeout)
	defer cancel()
	for len(batch) < r.cfg.BatchSize {
		m, err := reader.FetchMessage(fill)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			return nil, err
		}
		batch = append(batch, m)
	}
	return batch, nil
}

// applyBatch applies msgs in one transaction, retrying transient failures with
// backoff until it succeeds or the partition is lost. An in-flight batch is given
// DrainTimeout to finish when the generation ends.
func (r *Runner) applyBatch(genCtx context.Context, p *partition, msgs []kafka.Message) error {
	start, from := time.Now(), p.next
	ctx, cancel := drainContext(genCtx, r.cfg.DrainTimeout)
	defer cancel()
	var entries []entry
	if err := r.retry(ctx, p, "read personal data keys", func(ctx context.Context) error {
		var err error
		entries, err = r.prepare(ctx, msgs)
		return err
	}); err != nil {
		return err
	}
	var out outcome
	careful, resynced := false, false
	known := map[int64]error{} // events found poisonous where a rollback could not isolate them
	err := r.retry(ctx, p, "apply batch", func(ctx context.Context) error {
		var err error
		out, err = r.applyOnce(ctx, p, entries, careful, known)
		if errors.Is(err, errCareful) {
			careful = true
			p.log.Info("a write failed; applying the batch event by event to park the failing events",
				zap.Int64("from", msgs[0].Offset), zap.Int64("to", msgs[len(msgs)-1].Offset))
			out, err = r.applyOnce(ctx, p, entries, true, known)
		}
		for {
			var pe *poisonError
			if !errors.As(err, &pe) || known[pe.offset] != nil {
				break
			}
			known[pe.offset] = pe.err
			out, err = r.applyOnce(ctx, p, entries, true, known)
		}
		if errors.Is(err, offsets.ErrFenced) {
			ok, rerr := r.resync(ctx, p, msgs[len(msgs)-1].Offset+1)
			if ok {
				resynced = true // a previous attempt committed: not fenced
			}
			return rerr
		}
		return splitOnDeadlock(err) // not retried whole: applySplitting splits it
	})
	if err != nil {
		return err
	}
	if resynced { // the stored position already covers the batch
		p.fx.publish(ctx, from, p.next, nil, nil)
		p.status.batch(p.next, msgs[len(msgs)-1].HighWaterMark, outcome{}, r.readyLag, p.log)
		return r.retry(ctx, p, "load parked", func(ctx context.Context) error { return r.loadParked(ctx, p) })
	}
	for s, off := range out.parkedSubjects {
		if _, ok := p.parked[s]; !ok {
			p.parked[s] = off
		}
	}
	for i := range entries {
		if e := &entries[i]; e.act == actPark && e.behind < 0 {
			p.log.Warn("parked an event", zap.Int64("offset", e.msg.Offset), zap.String("subject", e.subject()),
				zap.String("event_id", e.ev.ID), zap.String("type", e.ev.Type), zap.String("error", e.reason))
		}
	}
	r.report(p, entries)
	last := msgs[len(msgs)-1]
	p.next = last.Offset + 1
	r.metrics.observe(out, time.Since(start))
	p.status.batch(p.next, last.HighWaterMark, out, r.readyLag, p.log)
	p.fx.publish(ctx, from, p.next, entries, p.effectsWait()) // committed: the effects may run
	r.observePartition(p)
	if r.scrubs != nil {
		r.scrubs.saw(entries)
	}
	if r.snaps != nil {
		r.snaps.afterBatch(genCtx, entries)
	}
	return nil
}

// observePartition updates the partition's gauges from its status.
func (r *Runner) observePartition(p *partition) {
	p.status.mu.Lock()
	lag, next := p.status.s.Lag, p.status.s.Next
	p.status.mu.Unlock()
	part := strconv.Itoa(p.key.Partition)
	r.metrics.lag.WithLabelValues(part).Set(float64(lag))
	r.metrics.offset.WithLabelValues(part).Set(float64(next))
}

// resync handles a compare-and-set that failed: if the stored owner is still this
// worker, an earlier attempt of the batch committed (its acknowledgement was lost)
// and the worker moves to the stored position; otherwise the partition is fenced.
func (r *Runner) resync(ctx context.Context, p *partition, target int64) (bool, error) {
	pos, ok, err := r.offsets.Get(ctx, r.cfg.Pool, p.key)
	if err != nil {
		return false, err
	}
	if !ok || pos.Generation != p.owner.Generation || pos.Member != p.owner.Member {
		r.metrics.fenced.Inc()
		p.log.Warn("fenced: another member owns the partition; this worker stops and commits nothing",
			zap.Int32("owner_generation", pos.Generation), zap.String("owner", pos.Member))
		return false, offsets.ErrFenced
	}
	if pos.Next < target {
		return false, fmt.Errorf("partition %d: stored offset %d, expected %d or more after a lost acknowledgement", p.key.Partition, pos.Next, target)
	}
	p.log.Info("an earlier attempt of this batch committed; moving to the stored position", zap.Int64("next_offset", pos.Next))
	p.next = pos.Next
	return true, nil
}

// retry runs fn until it succeeds, returning at once on a permanent error, on
// fencing, or when ctx ends. Transient errors wait with jittered exponential backoff.
func (r *Runner) retry(ctx context.Context, p *partition, what string, fn func(context.Context) error) error {
	backoff := r.cfg.RetryBackoffMin
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			if attempt > 1 {
				p.log.Info("recovered", zap.String("op", what), zap.Int("attempts", attempt))
				// What it waited on shows until it recovered, the attempts included.
				p.status.set(func(s *PartitionStatus) { s.Waiting = "" })
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, offsets.ErrFenced) || !readmodel.IsTransient(err) {
			return err
		}
		r.metrics.transient.Inc()
		if attempt == 1 || attempt%10 == 0 {
			p.log.Warn("transient error; retrying", zap.String("op", what), zap.Int("attempt", attempt), zap.Error(err))
		}
		p.status.set(func(s *PartitionStatus) { s.Waiting = err.Error() })
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff + jitter):
		}
		backoff = min(2*backoff, r.cfg.RetryBackoffMax)
	}
}

// drainContext returns a context that outlives parent's end by at most d, so that an
// in-flight batch can finish when its generation ends or the runner stops.
func drainContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(d, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
}

// layout returns the topic's partitioning history, read once per generation (a
// partition-count change starts a new one), retrying until it is read or ctx ends.
func (r *Runner) layout(ctx context.Context, gen int32) (*eventlog.Layout, error) {
	r.layoutMu.Lock()
	defer r.layoutMu.Unlock()
	if r.layoutGen == gen && r.topicLayout != nil {
		return r.topicLayout, nil
	}
	for attempt := 0; ; attempt++ {
		l, err := r.client.ReadLayout(ctx, r.cfg.Topic)
		if err == nil {
			r.topicLayout, r.layoutGen = &l, gen
			return &l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt%10 == 0 {
			r.log.Warn("reading the topic's partition layout failed; retrying", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// bounds returns a partition's first offset and its end (the high-water mark).
func (r *Runner) bounds(ctx context.Context, part int) (first, last int64, err error) {
	client := r.client.Kafka()
	for attempt := 0; ; attempt++ {
		resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
			r.cfg.Topic: {kafka.FirstOffsetOf(part), kafka.LastOffsetOf(part)},
		}})
		if err == nil {
			for _, po := range resp.Topics[r.cfg.Topic] {
				if po.Partition == part {
					if po.Error != nil {
						err = po.Error
						break
					}
					return po.FirstOffset, po.LastOffset, nil
				}
			}
			if err == nil {
				err = fmt.Errorf("no offsets for partition %d in the answer", part)
			}
		}
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		if attempt%10 == 0 {
			r.log.Warn("listing partition offsets failed; retrying", zap.Int("partition", part), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
