package projector

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/sideeffects"
)

// Effects run after their event's read-model transaction has committed, and never
// pass it, so an email never announces what the read model does not show yet. A
// dispatcher per partition, beside the partition's worker, runs every effect of the
// projection over the batches the worker commits, handed over in process with their
// events already decrypted and decoded (fxFeed): the log is read once, however many
// effects there are. Where the feed does not reach — a fresh claim whose watermarks
// are behind the read model, or a feed that overflowed while the effects were slower
// than the read model — the dispatcher reads the missing events from the log
// itself, once for all the partition's effects, up to the read model's position.
//
// An effect's position on a partition — its durable watermark — is a fenced row of
// its own (offsets.Key with Effect set), advanced once a batch's runs are done or
// parked. Runs reserve their keys in the ledger a chunk (EffectBatchSize) at a time,
// and each run is marked done as soon as it finishes, in the ledger's pipelined
// flushes; its slot (EffectConcurrency per effect and partition) is given back only
// once Redis holds the mark. So at any moment at most EffectConcurrency runs of an
// effect on a partition have run, or may have, without being marked done: all that a
// crash can run again, with the same keys. Reserved runs that had not started wait,
// after a crash, for their lease to expire, and then run once. A crash before the
// watermark moves re-reads the batch; the ledger (or, if Redis lost its data, one
// more run with the same key) settles it.

// EffectKey returns the offsets key of an effect's watermark on one partition.
func EffectKey(projection string, version int, effect, topic string, partition int) offsets.Key {
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
	FxFired            = "fired"
	FxSuppressedLedger = "suppressed_ledger"
	FxSuppressedHorzn  = "suppressed_horizon"
	FxParked           = "parked"
	FxRetried          = "retried"
	FxLeaseLost        = "lease_lost"
	FxForgotten        = "skipped_forgotten" // the subject's personal data is shredded
)

// fxLane is one effect on one partition: its watermark (p.next), horizon and status.
type fxLane struct {
	eff     *sideeffects.Effect
	p       *partition // p.key names the effect; p.status is the effect's row on the status board
	horizon time.Time  // events older than this are suppressed
	wrote   time.Time  // the claim's last write
	feed    *fxFeed    // told of each finished run, so that the read model waits for the lane while it moves
}

// claimLane claims an effect's watermark on a partition and reads its horizon.
func (r *Runner) claimLane(ctx context.Context, owner offsets.Owner, part int, eff *sideeffects.Effect, log *zap.Logger) (*fxLane, error) {
	st := r.status.effectPartition(eff.Name(), part)
	st.set(func(s *PartitionStatus) { s.State, s.Waiting, s.InFlight = StateClaiming, "", 0 })
	p := &partition{
		key:    EffectKey(r.cfg.Projection.Name(), r.cfg.Projection.Version(), eff.Name(), r.cfg.Topic, part),
		owner:  owner,
		status: st,
		log:    log.With(zap.String("effect", eff.Name())),
	}
	if err := r.claim(ctx, p); err != nil {
		return nil, err
	}
	ln := &fxLane{eff: eff, p: p, wrote: time.Now()}
	if err := r.retry(ctx, p, "effect start", func(ctx context.Context) error {
		var err error
		ln.horizon, err = r.effectStart(ctx, p, eff, part)
		return err
	}); err != nil {
		return nil, err
	}
	st.set(func(s *PartitionStatus) { s.Next = p.next })
	p.log.Debug("effect claimed", zap.Int64("watermark", p.next), zap.Time("horizon_from", ln.horizon))
	return ln, nil
}

// effectBatch runs an effect over a batch's entries at or above its watermark, up
// to next: it picks the runs (decoded, within the horizon, subjects not
// forgotten), runs them (runEffects), then advances the watermark to next with the
// parked runs in one PostgreSQL transaction.
func (r *Runner) effectBatch(genCtx context.Context, ln *fxLane, entries []entry, next int64) error {
	ctx, cancel := drainContext(genCtx, r.cfg.DrainTimeout)
	defer cancel()
	p := ln.p
	items, consumed := r.effectItems(ln, entries)
	var runnable []*fxItem
	for _, it := range items {
		if it.outcome == "" {
			runnable = append(runnable, it)
		}
	}
	if err := r.runEffects(ctx, genCtx.Done(), ln, runnable); err != nil {
		return err
	}
	err := r.retry(ctx, p, "advance effect watermark", func(ctx context.Context) error {
		tx, err := r.cfg.Pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
		r.queueAdvance(w, p, next, consumed)
		for _, it := range items {
			if it.outcome == FxParked {
				r.queueEffectPark(w, p, ln.eff, it)
			}
		}
		if err := w.Flush(ctx); err != nil {
			if errors.Is(err, offsets.ErrFenced) {
				if ok, rerr := r.resync(ctx, p, next); ok || rerr != nil {
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
	p.next, ln.wrote = max(p.next, next), time.Now()
	ln.feed.progressed()
	p.status.set(func(s *PartitionStatus) {
		s.Next, s.Lag = p.next, max(0, s.HighWater-p.next)
	})
	return nil
}

// effectItems picks an effect's runs from entries at or above its watermark, and
// counts those entries. Undecodable events park the run; events older than the
// horizon and forgotten subjects' events are counted, never run.
func (r *Runner) effectItems(ln *fxLane, entries []entry) (items []*fxItem, consumed int64) {
	eff := ln.eff
	for i := range entries {
		e := &entries[i]
		if e.msg.Offset < ln.p.next {
			continue
		}
		consumed++
		ev, err := e.ev, e.unread
		var pe *shred.Error
		if (err != nil && !errors.As(err, &pe)) || !eff.ReactsTo(ev.Type) {
			continue // undecodable events park in the read model; they fire nothing
		}
		var d events.Decoded
		if err == nil {
			d, err = ln.decode(e)
		}
		if err != nil {
			// The read model parks it too; the effect is parked, not lost, and a retry
			// after a fix (a newer build knowing the schema) runs it.
			items = append(items, &fxItem{msg: e.msg, dec: events.Decoded{Event: ev}, key: sideeffects.Key(eff.Name(), ev.ID),
				outcome: FxParked, err: fmt.Errorf("undecodable: %w", err)})
			r.countEffect(ln, FxParked)
			continue
		}
		if len(d.Redacted) > 0 {
			// The subject is forgotten: nobody is left to act for, and the fields the
			// effect needs are gone. Counted, never run.
			r.countEffect(ln, FxForgotten)
			continue
		}
		when := ev.Time
		if when.IsZero() {
			when = e.msg.Time // CloudEvents time is optional: the log's timestamp stands in
		}
		if when.Before(ln.horizon) {
			r.countEffect(ln, FxSuppressedHorzn)
			continue
		}
		items = append(items, &fxItem{msg: e.msg, dec: d, key: sideeffects.Key(eff.Name(), ev.ID)})
	}
	return items, consumed
}

// decode returns the entry's event as the effect's registry decodes it: the
// worker's decoding when the effect takes it as it is (see Effect.Accepts), else the
// effect's own, of the event the worker already decrypted.
func (ln *fxLane) decode(e *entry) (events.Decoded, error) {
	if e.decoded != nil && ln.eff.Accepts(*e.decoded) {
		return *e.decoded, nil
	}
	return ln.eff.Registry().Decode(e.ev)
}

// runEffects runs items: their keys reserved a chunk at a time, at most
// EffectConcurrency at once, each marked done (or, parking, released) as it
// finishes. Keys another holder has are tried again once its lease may have ended.
// Once stop is closed (the partition's generation ended: a rebalance, a stop) no run
// starts: the runs in flight finish and are marked within ctx (the drain), the keys
// reserved for runs not started are given back, and runEffects returns errStopping —
// so that a graceful handover re-runs nothing, where a drain cut short by its
// deadline in mid-send would leave sent runs unmarked for the next owner to run again.
func (r *Runner) runEffects(ctx context.Context, stop <-chan struct{}, ln *fxLane, items []*fxItem) error {
	pending := items
	backoff := 50 * time.Millisecond
	for len(pending) > 0 {
		held, again, err := r.runChunks(ctx, stop, ln, pending)
		if err != nil {
			return err
		}
		pending = slices.Concat(again, held)
		if len(held) == 0 {
			continue
		}
		// Keys held by another holder: wait for it to finish, or for its lease to
		// expire (a holder that crashed), then try them again.
		ln.p.status.set(func(s *PartitionStatus) {
			s.Waiting = fmt.Sprintf("%d runs wait for keys another holder reserved (its lease: %v)", len(held), r.cfg.Ledger.Lease())
		})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return errStopping
		case <-time.After(backoff):
		}
		ln.p.status.set(func(s *PartitionStatus) { s.Waiting = "" })
		backoff = min(2*backoff, max(r.cfg.Ledger.Lease()/4, 50*time.Millisecond))
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
func (r *Runner) runChunks(ctx context.Context, stop <-chan struct{}, ln *fxLane, items []*fxItem) (held, again []*fxItem, err error) {
	g, gctx := errgroup.WithContext(ctx)
	runs := make(chan fxRun)
	var mu sync.Mutex // guards again
	stale := func(it *fxItem) {
		mu.Lock()
		again = append(again, it)
		mu.Unlock()
	}
	for range r.cfg.EffectConcurrency {
		g.Go(func() error { return r.runWorker(gctx, ln, runs, stale) })
	}
	err = r.handOut(gctx, stop, ln, items, runs, &held)
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
func (r *Runner) handOut(ctx context.Context, stop <-chan struct{}, ln *fxLane, items []*fxItem, runs chan<- fxRun, held *[]*fxItem) error {
	type chunk struct {
		items    []*fxItem
		res      []sideeffects.Reservation
		reserved time.Time
	}
	ahead := make(chan chunk) // the next chunk, reserved while this one is handed out
	reserving, pctx := errgroup.WithContext(ctx)
	reserving.Go(func() error {
		defer close(ahead)
		for i := 0; i < len(items); i += r.cfg.EffectBatchSize {
			c := chunk{items: items[i:min(i+r.cfg.EffectBatchSize, len(items))]}
			keys := make([]string, len(c.items))
			for j, it := range c.items {
				keys[j] = it.key
			}
			if err := r.retry(pctx, ln.p, "ledger reserve", func(ctx context.Context) error {
				var err error
				c.res, err = r.cfg.Ledger.Reserve(ctx, keys)
				return r.redisTransient(err)
			}); err != nil {
				return err
			}
			c.reserved = time.Now()
			select {
			case ahead <- c:
			case <-pctx.Done():
				return pctx.Err()
			case <-stop:
				r.giveBack(ctx, ln, c.res)
				return errStopping
			}
		}
		return nil
	})
	var stopped error
	for c := range ahead {
		for j, it := range c.items {
			if stopped != nil {
				if stopped == errStopping { //nolint:errorlint // our own sentinel, never wrapped
					r.giveBack(ctx, ln, c.res[j:])
				}
				break
			}
			it.res = c.res[j]
			switch it.res.State {
			case sideeffects.Done:
				it.outcome = FxSuppressedLedger
				r.countEffect(ln, FxSuppressedLedger)
			case sideeffects.Held:
				*held = append(*held, it)
			default:
				select {
				case runs <- fxRun{it, c.reserved}:
				case <-ctx.Done():
					stopped = ctx.Err()
				case <-stop:
					stopped = errStopping
					r.giveBack(ctx, ln, c.res[j:j+1])
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
func (r *Runner) giveBack(ctx context.Context, ln *fxLane, res []sideeffects.Reservation) {
	var mine []sideeffects.Reservation
	for _, x := range res {
		if x.State == sideeffects.Acquired {
			mine = append(mine, x)
		}
	}
	if _, err := r.cfg.Ledger.Settle(ctx, nil, mine); err != nil {
		ln.p.log.Info("stopping: keys reserved for runs not started stay held until their lease ends", zap.Int("keys", len(mine)), zap.Error(err))
	}
}

// runWorker runs the runs it is handed, one at a time, each settled before the
// next. No run starts on a reservation older than half its lease (slow runs before
// it): its key is given back and the item goes to stale, to be reserved afresh.
func (r *Runner) runWorker(ctx context.Context, ln *fxLane, runs <-chan fxRun, stale func(*fxItem)) error {
	fresh := r.cfg.Ledger.Lease() / 2
	for rn := range runs {
		if time.Since(rn.reserved) <= fresh {
			if err := r.runOne(ctx, ln, rn.it); err != nil {
				return err
			}
			continue
		}
		stale(rn.it)
		if err := r.retry(ctx, ln.p, "ledger release", func(ctx context.Context) error {
			return r.redisTransient(r.cfg.Ledger.Release(ctx, rn.it.res))
		}); err != nil {
			return err
		}
	}
	return nil
}

// runOne runs an acquired item, retried with backoff on transient failures up to
// EffectMaxAttempts, and settles its key in the ledger before returning — its slot
// is held until Redis has the mark.
func (r *Runner) runOne(ctx context.Context, ln *fxLane, it *fxItem) error {
	p := ln.p
	p.status.set(func(s *PartitionStatus) { s.InFlight++ })
	defer p.status.set(func(s *PartitionStatus) { s.InFlight-- })
	if err := r.fire(ctx, ln, it); err != nil {
		return err // stopping: unsettled; the lease lets the next owner retry
	}
	defer ln.feed.progressed()
	if it.outcome != FxFired {
		return r.retry(ctx, p, "ledger release", func(ctx context.Context) error {
			return r.redisTransient(r.cfg.Ledger.Release(ctx, it.res))
		})
	}
	var marked bool
	if err := r.retry(ctx, p, "ledger mark done", func(ctx context.Context) error {
		var err error
		marked, err = r.cfg.Ledger.MarkDone(ctx, it.res)
		return r.redisTransient(err)
	}); err != nil {
		return err
	}
	if !marked {
		r.countEffect(ln, FxLeaseLost)
		p.log.Warn("the effect outlived its lease: another holder may run it too, with the same key",
			zap.String("key", it.key), zap.Int64("offset", it.msg.Offset), zap.Duration("lease", r.cfg.Ledger.Lease()))
	}
	return nil
}

// fire runs the effect's function for it until it succeeds (FxFired), fails
// permanently or EffectMaxAttempts times (FxParked), or ctx ends (the error). A
// failing run shows on the status board as what the effect waits on.
func (r *Runner) fire(ctx context.Context, ln *fxLane, it *fxItem) error {
	eff, p := ln.eff, ln.p
	backoff := r.cfg.RetryBackoffMin
	for {
		it.attempts++
		err := eff.Fire(ctx, sideeffects.Run{Effect: eff.Name(), Key: it.key, Attempt: it.attempts,
			ReadModel: sideeffects.NewReadModel(r.cfg.Pool, r.cfg.Projection.Schema())}, it.dec)
		if err == nil {
			it.outcome = FxFired
			r.countEffect(ln, FxFired)
			if it.attempts > 1 { // the downstream system answers again
				p.status.set(func(s *PartitionStatus) { s.Waiting = "" })
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg := withoutPersonal(eff.Registry(), it.dec.Event, err.Error())
		if sideeffects.IsPermanent(err) || it.attempts >= r.cfg.EffectMaxAttempts {
			it.outcome, it.err = FxParked, errors.New(msg)
			r.countEffect(ln, FxParked)
			p.log.Warn("effect parked", zap.String("key", it.key), zap.Int64("offset", it.msg.Offset),
				zap.String("event_id", it.dec.ID), zap.Int("attempts", it.attempts), zap.String("error", msg))
			if it.attempts > 1 {
				p.status.set(func(s *PartitionStatus) { s.Waiting = "" })
			}
			return nil
		}
		r.countEffect(ln, FxRetried)
		if it.attempts == 1 {
			p.log.Info("effect failed; retrying", zap.String("key", it.key), zap.String("error", msg))
		}
		p.status.set(func(s *PartitionStatus) {
			s.Waiting = fmt.Sprintf("the effect's downstream: attempt %d of a run failed, retrying: %s", it.attempts, msg)
		})
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff + jitter):
		}
		backoff = min(2*backoff, r.cfg.RetryBackoffMax)
	}
}

// effectStart records (once) when the effect started on this partition, and returns
// its horizon: events older than it are suppressed. The horizon is counted back from
// that start; a runner configured with another EffectHorizon moves it, for the events
// the effect has not passed yet (those below its watermark never run again), and
// says so.
func (r *Runner) effectStart(ctx context.Context, p *partition, eff *sideeffects.Effect, part int) (time.Time, error) {
	var from time.Time
	horizon := r.cfg.EffectHorizon.String()
	args := []any{eff.Name(), r.cfg.Projection.Name(), r.cfg.Projection.Version(), r.cfg.Topic, part, horizon}
	if _, err := r.cfg.Pool.Exec(ctx, `INSERT INTO `+r.tables.effectStarts+` (effect, projection, version, topic, partition, horizon_from, horizon)
		VALUES ($1, $2, $3, $4, $5, now() - $6::interval, $6::interval) ON CONFLICT DO NOTHING`, args...); err != nil {
		return from, err
	}
	var was *string
	err := r.cfg.Pool.QueryRow(ctx, `WITH old AS (
			SELECT horizon FROM `+r.tables.effectStarts+`
			 WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5)
		UPDATE `+r.tables.effectStarts+` s SET horizon_from = s.started_at - $6::interval, horizon = $6::interval
		  FROM old
		 WHERE s.effect = $1 AND s.projection = $2 AND s.version = $3 AND s.topic = $4 AND s.partition = $5
		   AND s.horizon IS DISTINCT FROM $6::interval
		RETURNING s.horizon_from, old.horizon::text`, args...).Scan(&from, &was)
	if err == nil {
		before := "unrecorded"
		if was != nil {
			before = *was
		}
		p.log.Info("the effect's horizon changed: it applies to the events the effect has not passed yet",
			zap.String("was", before), zap.Duration("now", r.cfg.EffectHorizon), zap.Time("horizon_from", from), zap.Int64("watermark", p.next))
		return from, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return from, err
	}
	err = r.cfg.Pool.QueryRow(ctx, `SELECT horizon_from FROM `+r.tables.effectStarts+`
		WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5`, args[:5]...).Scan(&from)
	return from, err
}

// redisTransient marks Redis errors transient: the ledger is retried, never skipped.
func (r *Runner) redisTransient(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return readmodel.Transient(err)
}

func (r *Runner) queueEffectPark(w *readmodel.Writer, p *partition, eff *sideeffects.Effect, it *fxItem) {
	headers, _ := json.Marshal(it.msg.Headers)
	w.Exec(`INSERT INTO `+r.tables.parkedEffects+` (effect, projection, version, topic, partition, "offset", event_id, event_type,
			idempotency_key, error, attempts, msg_key, msg_value, msg_headers)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (effect, projection, version, topic, partition, "offset") DO UPDATE
		   SET state = 'parked', error = EXCLUDED.error,
		       attempts = `+r.tables.parkedEffects+`.attempts + EXCLUDED.attempts, updated_at = now()`,
		eff.Name(), r.cfg.Projection.Name(), r.cfg.Projection.Version(), r.cfg.Topic, p.key.Partition, it.msg.Offset,
		text(it.dec.ID), text(it.dec.Type), it.key, text(it.err.Error()), it.attempts, it.msg.Key, it.msg.Value, headers)
}

// retryParkedEffects runs the lane's parked runs an operator asked to retry.
func (r *Runner) retryParkedEffects(ctx context.Context, ln *fxLane) error {
	p, eff := ln.p, ln.eff
	items, err := r.loadEffectRetries(ctx, ln)
	if err != nil || len(items) == 0 {
		return err
	}
	var ready []*fxItem
	msgs := make([]kafka.Message, len(items))
	for i, it := range items {
		msgs[i] = it.msg
	}
	envs, err := r.effectEnvelopes(ctx, p, eff, msgs)
	if err != nil {
		return err
	}
	for i, it := range items {
		ev, err := envs[i].ev, envs[i].problem
		if err == nil {
			it.dec, err = eff.Registry().Decode(ev)
		}
		if err != nil {
			it.outcome, it.err = FxParked, fmt.Errorf("undecodable: %w", err)
			continue
		}
		if len(it.dec.Redacted) > 0 {
			it.outcome = FxForgotten
			r.countEffect(ln, FxForgotten)
			continue
		}
		it.key = sideeffects.Key(eff.Name(), ev.ID)
		ready = append(ready, it)
	}
	dctx, cancel := drainContext(ctx, r.cfg.DrainTimeout)
	defer cancel()
	if err := r.runEffects(dctx, ctx.Done(), ln, ready); err != nil {
		return err
	}
	resolved := 0
	err = r.retry(dctx, p, "settle effect retries", func(ctx context.Context) error {
		b := &pgx.Batch{}
		resolved = 0
		for _, it := range items {
			if it.outcome == FxParked {
				b.Queue(`UPDATE `+r.tables.parkedEffects+` SET state = 'parked', error = $2, attempts = attempts + $3, updated_at = now() WHERE id = $1`,
					it.parkID, text(it.err.Error()), it.attempts)
			} else {
				resolved++
				b.Queue(`UPDATE `+r.tables.parkedEffects+` SET state = 'resolved', updated_at = now() WHERE id = $1`, it.parkID)
			}
		}
		return r.cfg.Pool.SendBatch(ctx, b).Close()
	})
	if err == nil {
		p.log.Info("retried parked effects", zap.Int("resolved", resolved), zap.Int("still_parked", len(items)-resolved))
	}
	return err
}

// loadEffectRetries returns the lane's parked runs an operator asked to retry.
func (r *Runner) loadEffectRetries(ctx context.Context, ln *fxLane) ([]*fxItem, error) {
	var items []*fxItem
	err := r.retry(ctx, ln.p, "load effect retries", func(ctx context.Context) error {
		rows, err := r.cfg.Pool.Query(ctx, `SELECT id, "offset", msg_key, msg_value, msg_headers FROM `+r.tables.parkedEffects+`
			WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5 AND state = 'retry'
			ORDER BY "offset"`, ln.eff.Name(), r.cfg.Projection.Name(), r.cfg.Projection.Version(), r.cfg.Topic, ln.p.key.Partition)
		if err != nil {
			return err
		}
		items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*fxItem, error) {
			it := &fxItem{}
			var headers []byte
			if err := row.Scan(&it.parkID, &it.msg.Offset, &it.msg.Key, &it.msg.Value, &headers); err != nil {
				return nil, err
			}
			if len(headers) > 0 {
				if err := json.Unmarshal(headers, &it.msg.Headers); err != nil {
					return nil, err
				}
			}
			return it, nil
		})
		return err
	})
	return items, err
}

// countEffect counts an effect run's outcome in metrics and status.
func (r *Runner) countEffect(ln *fxLane, outcome string) {
	r.metrics.effects.WithLabelValues(ln.eff.Name(), outcome).Inc()
	r.status.countEffect(ln.eff.Name(), outcome, 1)
	if outcome == FxParked {
		ln.p.status.set(func(s *PartitionStatus) { s.Parked++ })
	}
}

// effectEnvelopes reads an effect's messages as events, their personal data opened,
// retrying while the key store is unreachable.
func (r *Runner) effectEnvelopes(ctx context.Context, p *partition, eff *sideeffects.Effect, msgs []kafka.Message) ([]envelope, error) {
	var envs []envelope
	err := r.retry(ctx, p, "read personal data keys", func(ctx context.Context) error {
		var err error
		envs, err = r.readEnvelopes(ctx, eff.Registry(), msgs, eff.ReactsTo)
		return err
	})
	return envs, err
}
