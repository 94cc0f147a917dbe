package effects

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/internal/effectfire"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/internal/retry"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/sideeffects"
)

// effectKey returns the offsets key of an effect's watermark on one partition.
func effectKey(projection string, version int, effect, topic string, partition int) offsets.Key {
	return offsets.Key{Projection: projection, Version: version, Topic: topic, Partition: partition, Effect: effect}
}

// fxItem is one event's run of one effect.
type fxItem struct {
	msg      kafka.Message
	dec      events.Decoded
	key      string
	res      sideeffects.Reservation
	attempts int
	err      error // the last failure, when it parks
	parkID   int64 // in a retry: the parked row
	outcome  string
}

// Effect outcomes, as counted in metrics and status.
const (
	Fired             = "fired"
	SuppressedLedger  = "suppressed_ledger"
	SuppressedHorizon = "suppressed_horizon"
	Parked            = "parked"
	Retried           = "retried"
	LeaseLost         = "lease_lost"
	Forgotten         = "skipped_forgotten" // the subject's personal data is shredded
)

// fxLane is one effect on one partition: its watermark (p.Next), horizon and status.
type fxLane struct {
	eff     *sideeffects.Effect
	p       *lane.Lane // p.Key names the effect; p.Status is the effect's row on the status board
	horizon time.Time  // events older than this are suppressed
	wrote   time.Time  // the claim's last write
	feed    *Feed      // told of each finished run, so that the read model waits for the lane while it moves
}

// claimLane claims an effect's watermark on a partition and reads its horizon.
func (e *Engine) claimLane(ctx context.Context, owner offsets.Owner, part int, eff *sideeffects.Effect, log *zap.Logger) (*fxLane, error) {
	st := e.cfg.Board.EffectPartition(eff.Name(), part)
	st.Set(func(s *lane.PartitionStatus) { s.State, s.Waiting, s.InFlight = lane.StateClaiming, "", 0 })
	p := &lane.Lane{
		Key:    effectKey(e.cfg.Projection.Name(), e.cfg.Projection.Version(), eff.Name(), e.env.Topic, part),
		Owner:  owner,
		Status: st,
		Log:    log.With(zap.String("effect", eff.Name())),
	}
	if err := e.env.Claim(ctx, p); err != nil {
		return nil, err
	}
	ln := &fxLane{eff: eff, p: p, wrote: time.Now()}
	if err := e.env.Do(ctx, p, "effect start", func(ctx context.Context) error {
		var err error
		ln.horizon, err = e.effectStart(ctx, p, eff, part)
		return err
	}); err != nil {
		return nil, err
	}
	st.Set(func(s *lane.PartitionStatus) { s.Next = p.Next })
	p.Log.Debug("effect claimed", zap.Int64("watermark", p.Next), zap.Time("horizon_from", ln.horizon))
	return ln, nil
}

// effectBatch runs an effect over a batch's entries at or above its watermark, up
// to next: it picks the runs (decoded, within the horizon, subjects not
// forgotten), runs them (runEffects), then advances the watermark to next with the
// parked runs in one PostgreSQL transaction.
func (e *Engine) effectBatch(genCtx context.Context, ln *fxLane, entries []Entry, next int64) error {
	ctx, cancel := lane.DrainContext(genCtx, e.cfg.DrainTimeout)
	defer cancel()
	items, consumed := e.effectItems(ln, entries)
	var runnable []*fxItem
	for _, it := range items {
		if it.outcome == "" {
			runnable = append(runnable, it)
		}
	}
	if err := e.runEffects(ctx, genCtx.Done(), ln, runnable); err != nil {
		return err
	}
	return e.advanceLane(ctx, ln, items, next, consumed)
}

// passLane moves a lane over a span whose events are all older than its horizon,
// without reading them: they count as suppressed, as effectItems counts them.
func (e *Engine) passLane(genCtx context.Context, ln *fxLane, s Span) error {
	ctx, cancel := lane.DrainContext(genCtx, e.cfg.DrainTimeout)
	defer cancel()
	if err := e.advanceLane(ctx, ln, nil, s.Next, s.Events); err != nil {
		return err
	}
	n := 0
	for t, c := range s.Types {
		if ln.eff.ReactsTo(t) {
			n += c
		}
	}
	e.countEffects(ln, SuppressedHorizon, n)
	return nil
}

// advanceLane moves the lane's watermark to next, with its parked items, in one
// PostgreSQL transaction; consumed is how many events it passed.
func (e *Engine) advanceLane(ctx context.Context, ln *fxLane, items []*fxItem, next, consumed int64) error {
	p := ln.p
	err := e.env.Do(ctx, p, "advance effect watermark", func(ctx context.Context) error {
		tx, err := e.env.Pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
		e.env.QueueAdvance(w, p, next, consumed)
		for _, it := range items {
			if it.outcome == Parked {
				e.queueEffectPark(w, p, ln.eff, it)
			}
		}
		if err := w.Flush(ctx); err != nil {
			if errors.Is(err, offsets.ErrFenced) {
				if ok, rerr := e.env.Resync(ctx, p, next); ok || rerr != nil {
					return rerr
				}
			}
			return err
		}
		return tx.Commit(ctx)
	})
	if err != nil {
		return err
	}
	p.Next, ln.wrote = max(p.Next, next), time.Now()
	ln.feed.progressed()
	p.Status.Set(func(s *lane.PartitionStatus) {
		s.Next, s.Lag = p.Next, max(0, s.HighWater-p.Next)
	})
	return nil
}

// effectItems picks an effect's runs from entries at or above its watermark, and
// counts those entries. Events older than the horizon are counted, never run (nor
// parked); of the others, undecodable events park the run, and forgotten subjects'
// events are counted, never run.
func (e *Engine) effectItems(ln *fxLane, entries []Entry) (items []*fxItem, consumed int64) {
	eff := ln.eff
	for i := range entries {
		en := &entries[i]
		if en.Msg.Offset < ln.p.Next {
			continue
		}
		consumed++
		ev, err := en.Event, en.Unread
		var pe *shred.Error
		if (err != nil && !errors.As(err, &pe)) || !eff.ReactsTo(ev.Type) {
			continue // undecodable events park in the read model; they fire nothing
		}
		// The horizon first: an event older than it is never run, so it is neither
		// parked nor decoded (a lane passing a fold's span unread counts it so too).
		when := ev.Time
		if when.IsZero() {
			when = en.Msg.Time // CloudEvents time is optional: the log's timestamp stands in
		}
		if when.Before(ln.horizon) {
			e.countEffect(ln, SuppressedHorizon)
			continue
		}
		var d events.Decoded
		if err == nil {
			d, err = ln.decode(en)
		}
		if err != nil {
			// The read model parks it too; the effect is parked, not lost, and a retry
			// after a fix (a newer build knowing the schema) runs it.
			items = append(items, &fxItem{msg: en.Msg, dec: events.Decoded{Event: ev}, key: sideeffects.Key(eff.Name(), ev.ID),
				outcome: Parked, err: fmt.Errorf("undecodable: %w", err)})
			e.countEffect(ln, Parked)
			continue
		}
		if len(d.Redacted) > 0 {
			// The subject is forgotten: nobody is left to act for, and the fields the
			// effect needs are gone. Counted, never run.
			e.countEffect(ln, Forgotten)
			continue
		}
		items = append(items, &fxItem{msg: en.Msg, dec: d, key: sideeffects.Key(eff.Name(), ev.ID)})
	}
	return items, consumed
}

// decode returns the entry's event as the effect's registry decodes it: the
// worker's decoding when the effect takes it as it is (see Effect.Accepts), else the
// effect's own, of the event the worker already decrypted.
func (ln *fxLane) decode(e *Entry) (events.Decoded, error) {
	if e.Decoded != nil && ln.eff.Accepts(*e.Decoded) {
		return *e.Decoded, nil
	}
	return ln.eff.Registry().Decode(e.Event)
}

// runEffects runs items: their keys reserved a chunk at a time, at most
// EffectConcurrency at once, each marked done (or, parking, released) as it
// finishes. Keys another holder has are tried again once its lease may have ended.
// Once stop is closed (the partition's generation ended: a rebalance, a stop) no run
// starts: the runs in flight finish and are marked within ctx (the drain), the keys
// reserved for runs not started are given back, and runEffects returns errStopping —
// so that a graceful handover re-runs nothing, where a drain cut short by its
// deadline in mid-send would leave sent runs unmarked for the next owner to run again.
func (e *Engine) runEffects(ctx context.Context, stop <-chan struct{}, ln *fxLane, items []*fxItem) error {
	pending := items
	// Keys another holder has: wait for it to finish, or for its lease to expire (a
	// holder that crashed), then try them again.
	heldKeys := retry.Policy{Min: 50 * time.Millisecond, Max: max(e.cfg.Ledger.Lease()/4, 50*time.Millisecond), NoJitter: true}
	for round := 1; len(pending) > 0; {
		held, again, err := e.runChunks(ctx, stop, ln, pending)
		if err != nil {
			return err
		}
		pending = slices.Concat(again, held)
		if len(held) == 0 {
			continue
		}
		ln.p.Status.Set(func(s *lane.PartitionStatus) {
			s.Waiting = fmt.Sprintf("%d runs wait for keys another holder reserved (its lease: %v)", len(held), e.cfg.Ledger.Lease())
		})
		select {
		case <-stop:
			return errStopping
		default:
		}
		if err := retry.Sleep(ctx, heldKeys.Wait(round)); err != nil {
			return err
		}
		round++
		ln.p.Status.Set(func(s *lane.PartitionStatus) { s.Waiting = "" })
	}
	return nil
}

// fxRun is an acquired item handed to a worker, with when its key was reserved.
type fxRun struct {
	it       *fxItem
	reserved time.Time
}

// runChunks reserves items' keys EffectBatchSize at a time (one Redis round trip
// each, a chunk ahead) and hands the acquired runs to EffectConcurrency workers. A
// worker takes its next run only once its last one's key is settled in the ledger,
// so at most EffectConcurrency runs are started and not marked done. It returns,
// once every run it handed out has finished, the items whose keys another holder
// has, and the items to reserve afresh (see runWorker).
func (e *Engine) runChunks(ctx context.Context, stop <-chan struct{}, ln *fxLane, items []*fxItem) (held, again []*fxItem, err error) {
	g, gctx := errgroup.WithContext(ctx)
	runs := make(chan fxRun)
	var mu sync.Mutex // guards again
	stale := func(it *fxItem) {
		mu.Lock()
		again = append(again, it)
		mu.Unlock()
	}
	for range e.cfg.Concurrency {
		g.Go(func() error { return e.runWorker(gctx, ln, runs, stale) })
	}
	err = e.handOut(gctx, stop, ln, items, runs, &held)
	close(runs)
	// Stopped before every item was reserved and run: an error, never a nil that
	// would let the watermark pass items that did not run.
	if err := cmp.Or(g.Wait(), err, ctx.Err()); err != nil {
		return nil, nil, err
	}
	return held, again, nil
}

// handOut reserves items' keys a chunk at a time, the next chunk while this one's
// runs are handed out, and hands each acquired item to a worker; keys done already
// are counted, keys another holder has go to held. It returns an error when it
// stopped before the end; stopped by stop, it gives back the keys it reserved for
// runs it did not hand out.
func (e *Engine) handOut(ctx context.Context, stop <-chan struct{}, ln *fxLane, items []*fxItem, runs chan<- fxRun, held *[]*fxItem) error {
	type chunk struct {
		items    []*fxItem
		res      []sideeffects.Reservation
		reserved time.Time
	}
	ahead := make(chan chunk) // the next chunk, reserved while this one is handed out
	reserving, pctx := errgroup.WithContext(ctx)
	reserving.Go(func() error {
		defer close(ahead)
		for i := 0; i < len(items); i += e.cfg.ReserveBatch {
			c := chunk{items: items[i:min(i+e.cfg.ReserveBatch, len(items))]}
			keys := make([]string, len(c.items))
			for j, it := range c.items {
				keys[j] = it.key
			}
			if err := e.env.Do(pctx, ln.p, "ledger reserve", func(ctx context.Context) error {
				var err error
				c.res, err = e.cfg.Ledger.Reserve(ctx, keys)
				return e.redisTransient(err)
			}); err != nil {
				return err
			}
			c.reserved = time.Now()
			select {
			case ahead <- c:
			case <-pctx.Done():
				return pctx.Err()
			case <-stop:
				e.giveBack(ctx, ln, c.res)
				return errStopping
			}
		}
		return nil
	})
	var stopped error
	for c := range ahead {
		for j, it := range c.items {
			if stopped != nil {
				if errors.Is(stopped, errStopping) {
					e.giveBack(ctx, ln, c.res[j:])
				}
				break
			}
			it.res = c.res[j]
			switch it.res.State {
			case sideeffects.Done:
				it.outcome = SuppressedLedger
				e.countEffect(ln, SuppressedLedger)
			case sideeffects.Held:
				*held = append(*held, it)
			default:
				select {
				case runs <- fxRun{it, c.reserved}:
				case <-ctx.Done():
					stopped = ctx.Err()
				case <-stop:
					stopped = errStopping
					e.giveBack(ctx, ln, c.res[j:j+1])
				}
			}
		}
	}
	return cmp.Or(stopped, reserving.Wait())
}

// errStopping ends an effect batch whose generation ended: its runs in flight
// finished and were marked, and none other started; the watermark stays.
var errStopping = errors.New("stopping: the partition's generation ended")

// giveBack releases the acquired keys among res, in one round trip, best effort: a
// key not given back is free again when its lease ends.
func (e *Engine) giveBack(ctx context.Context, ln *fxLane, res []sideeffects.Reservation) {
	var mine []sideeffects.Reservation
	for _, x := range res {
		if x.State == sideeffects.Acquired {
			mine = append(mine, x)
		}
	}
	if _, err := e.cfg.Ledger.Settle(ctx, nil, mine); err != nil {
		ln.p.Log.Info("stopping: keys reserved for runs not started stay held until their lease ends", zap.Int("keys", len(mine)), zap.Error(err))
	}
}

// runWorker runs the runs it is handed, one at a time, each settled before the
// next. No run starts on a reservation older than half its lease (slow runs before
// it): its key is given back and the item goes to stale, to be reserved afresh.
func (e *Engine) runWorker(ctx context.Context, ln *fxLane, runs <-chan fxRun, stale func(*fxItem)) error {
	fresh := e.cfg.Ledger.Lease() / 2
	for rn := range runs {
		if time.Since(rn.reserved) <= fresh {
			if err := e.runOne(ctx, ln, rn.it); err != nil {
				return err
			}
			continue
		}
		stale(rn.it)
		if err := e.env.Do(ctx, ln.p, "ledger release", func(ctx context.Context) error {
			return e.redisTransient(e.cfg.Ledger.Release(ctx, rn.it.res))
		}); err != nil {
			return err
		}
	}
	return nil
}

// runOne runs an acquired item, retried with backoff on transient failures up to
// EffectMaxAttempts, and settles its key in the ledger before returning — its slot
// is held until Redis has the mark.
func (e *Engine) runOne(ctx context.Context, ln *fxLane, it *fxItem) error {
	p := ln.p
	p.Status.Set(func(s *lane.PartitionStatus) { s.InFlight++ })
	defer p.Status.Set(func(s *lane.PartitionStatus) { s.InFlight-- })
	if err := e.fire(ctx, ln, it); err != nil {
		return err // stopping: unsettled; the lease lets the next owner retry
	}
	defer ln.feed.progressed()
	if it.outcome != Fired {
		return e.env.Do(ctx, p, "ledger release", func(ctx context.Context) error {
			return e.redisTransient(e.cfg.Ledger.Release(ctx, it.res))
		})
	}
	var marked bool
	if err := e.env.Do(ctx, p, "ledger mark done", func(ctx context.Context) error {
		var err error
		marked, err = e.cfg.Ledger.MarkDone(ctx, it.res)
		return e.redisTransient(err)
	}); err != nil {
		return err
	}
	if !marked {
		e.countEffect(ln, LeaseLost)
		p.Log.Warn("the effect outlived its lease: another holder may run it too, with the same key",
			zap.String("key", it.key), zap.Int64("offset", it.msg.Offset), zap.Duration("lease", e.cfg.Ledger.Lease()))
	}
	return nil
}

// fire runs the effect's function for it until it succeeds (Fired), fails
// permanently or MaxAttempts times (Parked), or ctx ends (the error), retried by
// the Fire policy. A failing run shows on the status board as what the effect
// waits on, until it settles.
func (e *Engine) fire(ctx context.Context, ln *fxLane, it *fxItem) error {
	eff, p := ln.eff, ln.p
	personal := func(err error) string { return lane.WithoutPersonal(eff.Registry(), it.dec.Event, err.Error()) }
	err := e.cfg.Fire.Do(ctx, retry.Hooks{
		Retryable: func(err error) bool { return !sideeffects.IsPermanent(err) },
		Attempts:  max(1, e.cfg.MaxAttempts-it.attempts),
		Failed: func(_ int, err error) {
			e.countEffect(ln, Retried)
			msg := personal(err)
			if it.attempts == 1 {
				p.Log.Info("effect failed; retrying", zap.String("key", it.key), zap.String("error", msg))
			}
			p.Status.Set(func(s *lane.PartitionStatus) {
				s.Waiting = fmt.Sprintf("the effect's downstream: attempt %d of a run failed, retrying: %s", it.attempts, msg)
			})
		},
	}, func(ctx context.Context) error {
		it.attempts++
		return effectfire.Fire(ctx, eff, sideeffects.Run{Effect: eff.Name(), Key: it.key, Attempt: it.attempts,
			ReadModel: sideeffects.NewReadModel(e.env.Pool, e.cfg.Projection.Schema())}, it.dec)
	})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if it.attempts > 1 { // settled: the downstream system answers again, or it parks
		p.Status.Set(func(s *lane.PartitionStatus) { s.Waiting = "" })
	}
	if err == nil {
		it.outcome = Fired
		e.countEffect(ln, Fired)
		return nil
	}
	msg := personal(err)
	it.outcome, it.err = Parked, errors.New(msg)
	e.countEffect(ln, Parked)
	p.Log.Warn("effect parked", zap.String("key", it.key), zap.Int64("offset", it.msg.Offset),
		zap.String("event_id", it.dec.ID), zap.Int("attempts", it.attempts), zap.String("error", msg))
	return nil
}

// effectStart records (once) when the effect started on this partition, and returns
// its horizon: events older than it are suppressed. The horizon is counted back from
// that start; a runner configured with another EffectHorizon moves it, for the events
// the effect has not passed yet (those below its watermark never run again), and
// says so.
func (e *Engine) effectStart(ctx context.Context, p *lane.Lane, eff *sideeffects.Effect, part int) (time.Time, error) {
	from, moved, was, err := store.EffectHorizon(ctx, e.env.Pool, e.cfg.Schema, e.fxPartition(eff, part), e.cfg.Horizon)
	if err == nil && moved {
		before := "unrecorded"
		if was != nil {
			before = *was
		}
		p.Log.Info("the effect's horizon changed: it applies to the events the effect has not passed yet",
			zap.String("was", before), zap.Duration("now", e.cfg.Horizon), zap.Time("horizon_from", from), zap.Int64("watermark", p.Next))
	}
	return from, err
}

// fxPartition names a partition of one of the projection's effects.
func (e *Engine) fxPartition(eff *sideeffects.Effect, part int) store.Partition {
	return store.Partition{Effect: eff.Name(), Projection: e.cfg.Projection.Name(), Version: e.cfg.Projection.Version(), Topic: e.env.Topic, Partition: part}
}

// redisTransient marks Redis errors transient: the ledger is retried, never skipped.
func (e *Engine) redisTransient(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return readmodel.Transient(err)
}

func (e *Engine) queueEffectPark(w *readmodel.Writer, p *lane.Lane, eff *sideeffects.Effect, it *fxItem) {
	headers, _ := json.Marshal(it.msg.Headers)
	store.QueueParkEffect(w, e.cfg.Schema, e.fxPartition(eff, p.Key.Partition), store.NewParkedEffect{
		Offset: it.msg.Offset, EventID: text(it.dec.ID), EventType: text(it.dec.Type), IdempotencyKey: it.key,
		Error: text(it.err.Error()), Attempts: it.attempts, Key: it.msg.Key, Value: it.msg.Value, Headers: headers,
	})
}

// retryParkedEffects runs the lane's parked runs an operator asked to retry.
func (e *Engine) retryParkedEffects(ctx context.Context, ln *fxLane) error {
	p, eff := ln.p, ln.eff
	items, err := e.loadEffectRetries(ctx, ln)
	if err != nil || len(items) == 0 {
		return err
	}
	var ready []*fxItem
	msgs := make([]kafka.Message, len(items))
	for i, it := range items {
		msgs[i] = it.msg
	}
	envs, err := e.effectEnvelopes(ctx, p, eff, msgs)
	if err != nil {
		return err
	}
	for i, it := range items {
		ev, err := envs[i].Event, envs[i].Problem
		if err == nil {
			it.dec, err = eff.Registry().Decode(ev)
		}
		if err != nil {
			it.outcome, it.err = Parked, fmt.Errorf("undecodable: %w", err)
			continue
		}
		if len(it.dec.Redacted) > 0 {
			it.outcome = Forgotten
			e.countEffect(ln, Forgotten)
			continue
		}
		it.key = sideeffects.Key(eff.Name(), ev.ID)
		ready = append(ready, it)
	}
	dctx, cancel := lane.DrainContext(ctx, e.cfg.DrainTimeout)
	defer cancel()
	if err := e.runEffects(dctx, ctx.Done(), ln, ready); err != nil {
		return err
	}
	resolved := 0
	err = e.env.Do(dctx, p, "settle effect retries", func(ctx context.Context) error {
		b := &pgx.Batch{}
		resolved = 0
		for _, it := range items {
			if it.outcome == Parked {
				store.QueueParkedEffectAgain(b, e.cfg.Schema, it.parkID, text(it.err.Error()), it.attempts)
			} else {
				resolved++
				store.QueueParkedEffectResolved(b, e.cfg.Schema, it.parkID)
			}
		}
		return e.env.Pool.SendBatch(ctx, b).Close()
	})
	if err == nil {
		p.Log.Info("retried parked effects", zap.Int("resolved", resolved), zap.Int("still_parked", len(items)-resolved))
	}
	return err
}

// loadEffectRetries returns the lane's parked runs an operator asked to retry.
func (e *Engine) loadEffectRetries(ctx context.Context, ln *fxLane) ([]*fxItem, error) {
	var items []*fxItem
	err := e.env.Do(ctx, ln.p, "load effect retries", func(ctx context.Context) error {
		parked, err := store.ParkedEffectRetries(ctx, e.env.Pool, e.cfg.Schema, e.fxPartition(ln.eff, ln.p.Key.Partition))
		if err != nil {
			return err
		}
		items = make([]*fxItem, 0, len(parked))
		for _, pe := range parked {
			it := &fxItem{parkID: pe.ID, msg: kafka.Message{Offset: pe.Offset, Key: pe.Key, Value: pe.Value}}
			if len(pe.Headers) > 0 {
				if err := json.Unmarshal(pe.Headers, &it.msg.Headers); err != nil {
					return err
				}
			}
			items = append(items, it)
		}
		return nil
	})
	return items, err
}

// countEffect counts an effect run's outcome in metrics and status.
func (e *Engine) countEffect(ln *fxLane, outcome string) { e.countEffects(ln, outcome, 1) }

// countEffects counts n runs of one outcome.
func (e *Engine) countEffects(ln *fxLane, outcome string, n int) {
	if n <= 0 {
		return
	}
	e.cfg.Runs.WithLabelValues(ln.eff.Name(), outcome).Add(float64(n))
	e.cfg.Board.CountEffect(ln.eff.Name(), outcome, int64(n))
	if outcome == Parked {
		ln.p.Status.Set(func(s *lane.PartitionStatus) { s.Parked += int64(n) })
	}
}

// effectEnvelopes reads an effect's messages as events, their personal data opened,
// retrying while the key store is unreachable.
func (e *Engine) effectEnvelopes(ctx context.Context, p *lane.Lane, eff *sideeffects.Effect, msgs []kafka.Message) ([]lane.Envelope, error) {
	var envs []lane.Envelope
	err := e.env.Do(ctx, p, "read personal data keys", func(ctx context.Context) error {
		var err error
		envs, err = e.env.ReadEnvelopes(ctx, eff.Registry(), msgs, eff.ReactsTo)
		return err
	})
	return envs, err
}
