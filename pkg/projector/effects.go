package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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

// Effects run after their event's read-model transaction has committed: an effect
// worker per partition and effect follows the read model's stored position and never
// passes it, so an email never announces what the read model does not show yet. Its
// own position — the effect's durable watermark — is a fenced row of its own
// (offsets.Key with Effect set), advanced only once a batch's effects are done or parked. No
// crash point loses an effect: a crash before the watermark moves re-reads the
// events, and the ledger (or, if Redis lost its data, one more run with the same key)
// settles them.

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

func (r *Runner) workEffect(ctx context.Context, gen *kafka.Generation, part int, eff *sideeffects.Effect) error {
	p := &partition{
		key:    EffectKey(r.cfg.Projection.Name(), r.cfg.Projection.Version(), eff.Name(), r.cfg.Topic, part),
		owner:  offsets.Owner{Generation: gen.ID, Member: gen.MemberID},
		status: &partStatus{},
		log:    r.log.With(zap.Int("partition", part), zap.String("effect", eff.Name()), zap.Int32("generation", gen.ID)),
	}
	readModel := r.status.partition(part)
	if err := r.claim(ctx, p); err != nil {
		return err
	}
	var horizonFrom time.Time
	if err := r.retry(ctx, p, "effect start", func(ctx context.Context) error {
		var err error
		horizonFrom, err = r.effectStart(ctx, p, eff, part)
		return err
	}); err != nil {
		return err
	}
	first, _, err := r.bounds(ctx, part)
	if err != nil {
		return err
	}
	if p.next < first {
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
	p.log.Debug("effect claimed", zap.Int64("watermark", p.next), zap.Time("horizon_from", horizonFrom))
	rd := r.newPartitionReader(p)
	defer rd.close()
	var held []kafka.Message // read ahead of the read model: they wait
	lastRetryPoll, lastTouch := time.Now(), time.Now()
	for {
		if ctx.Err() != nil {
			return nil
		}
		limit := readModel.committed()
		var batch []kafka.Message
		if len(held) > 0 && held[0].Offset < limit {
			n := 0
			for n < len(held) && held[n].Offset < limit && n < r.cfg.BatchSize {
				n++
			}
			batch, held = append([]kafka.Message(nil), held[:n]...), held[n:]
		} else if len(held) == 0 {
			msgs, err := rd.readBatch(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				continue // logged; the reader starts over at the watermark
			}
			if len(msgs) == 0 && time.Since(lastTouch) >= r.offsets.StaleClaimAfter/4 {
				lastTouch = time.Now()
				if err := r.retry(ctx, p, "refresh claim", func(ctx context.Context) error {
					return r.offsets.Touch(ctx, r.cfg.Pool, p.key, p.owner)
				}); err != nil {
					return err
				}
			}
			for _, m := range msgs {
				switch {
				case m.Offset < p.next: // stale
				case m.Offset < limit && len(held) == 0:
					batch = append(batch, m)
				default:
					held = append(held, m)
				}
			}
		} else {
			select { // wait for the read model to commit further
			case <-ctx.Done():
				return nil
			case <-time.After(20 * time.Millisecond):
			}
		}
		if len(batch) > 0 {
			lastTouch = time.Now()
			if err := r.effectBatch(ctx, p, eff, horizonFrom, batch); err != nil {
				return err
			}
		}
		if time.Since(lastRetryPoll) >= r.cfg.RetryPoll {
			lastRetryPoll = time.Now()
			if err := r.retryParkedEffects(ctx, p, eff); err != nil {
				return err
			}
		}
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

// effectBatch runs one batch of an effect: decode and filter, reserve every key in
// one Redis round trip, run the acquired ones (bounded concurrency, retries with
// backoff), settle in one round trip, then advance the watermark with the parked
// effects in one PostgreSQL transaction.
func (r *Runner) effectBatch(genCtx context.Context, p *partition, eff *sideeffects.Effect, horizonFrom time.Time, msgs []kafka.Message) error {
	ctx, cancel := drainContext(genCtx, r.cfg.DrainTimeout)
	defer cancel()
	var items []*fxItem
	envs, err := r.effectEnvelopes(ctx, p, eff, msgs)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		ev, err := envs[i].ev, envs[i].problem
		var pe *shred.Error
		if (err != nil && !errors.As(err, &pe)) || !eff.ReactsTo(ev.Type) {
			continue // undecodable events park in the read model; they fire nothing
		}
		var d events.Decoded
		if err == nil {
			d, err = eff.Registry().Decode(ev)
		}
		if err != nil {
			// The read model parks it too; the effect is parked, not lost, and a retry
			// after a fix (a newer build knowing the schema) runs it.
			items = append(items, &fxItem{msg: m, dec: events.Decoded{Event: ev}, key: sideeffects.Key(eff.Name(), ev.ID),
				outcome: FxParked, err: fmt.Errorf("undecodable: %w", err)})
			r.countEffect(eff.Name(), FxParked)
			continue
		}
		if len(d.Redacted) > 0 {
			// The subject is forgotten: nobody is left to act for, and the fields the
			// effect needs are gone. Counted, never run.
			r.countEffect(eff.Name(), FxForgotten)
			continue
		}
		when := ev.Time
		if when.IsZero() {
			when = m.Time // CloudEvents time is optional: the log's timestamp stands in
		}
		if when.Before(horizonFrom) {
			r.countEffect(eff.Name(), FxSuppressedHorzn)
			continue
		}
		items = append(items, &fxItem{msg: m, dec: d, key: sideeffects.Key(eff.Name(), ev.ID)})
	}
	var runnable []*fxItem
	for _, it := range items {
		if it.outcome == "" {
			runnable = append(runnable, it)
		}
	}
	for i := 0; i < len(runnable); i += r.cfg.EffectBatchSize {
		if err := r.runEffects(ctx, p, eff, runnable[i:min(i+r.cfg.EffectBatchSize, len(runnable))]); err != nil {
			return err
		}
	}
	next := msgs[len(msgs)-1].Offset + 1
	err = r.retry(ctx, p, "advance effect watermark", func(ctx context.Context) error {
		tx, err := r.cfg.Pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		w := readmodel.NewWriter(tx)
		r.queueAdvance(w, p, next, int64(len(msgs)))
		for _, it := range items {
			if it.outcome == FxParked {
				r.queueEffectPark(w, p, eff, it)
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
	p.next = max(p.next, next)
	return nil
}

// runEffects reserves, runs and settles items, setting each one's outcome.
func (r *Runner) runEffects(ctx context.Context, p *partition, eff *sideeffects.Effect, items []*fxItem) error {
	pending := items
	backoff := 50 * time.Millisecond
	for len(pending) > 0 {
		keys := make([]string, len(pending))
		for i, it := range pending {
			keys[i] = it.key
		}
		var res []sideeffects.Reservation
		err := r.retry(ctx, p, "ledger reserve", func(ctx context.Context) error {
			var err error
			res, err = r.cfg.Ledger.Reserve(ctx, keys)
			return r.redisTransient(err)
		})
		if err != nil {
			return err
		}
		var acquired, held []*fxItem
		for i, it := range pending {
			it.res = res[i]
			switch res[i].State {
			case sideeffects.Done:
				it.outcome = FxSuppressedLedger
				r.countEffect(eff.Name(), FxSuppressedLedger)
			case sideeffects.Held:
				held = append(held, it)
			default:
				acquired = append(acquired, it)
			}
		}
		if err := r.fire(ctx, p, eff, acquired); err != nil {
			return err
		}
		var done, release []sideeffects.Reservation
		var doneItems []*fxItem
		for _, it := range acquired {
			if it.outcome == FxFired {
				done, doneItems = append(done, it.res), append(doneItems, it)
			} else {
				release = append(release, it.res)
			}
		}
		var marked []bool
		err = r.retry(ctx, p, "ledger settle", func(ctx context.Context) error {
			var err error
			marked, err = r.cfg.Ledger.Settle(ctx, done, release)
			return r.redisTransient(err)
		})
		if err != nil {
			return err
		}
		for i, ok := range marked {
			if !ok {
				r.countEffect(eff.Name(), FxLeaseLost)
				p.log.Warn("the effect outlived its lease: another holder may run it too, with the same key",
					zap.String("key", doneItems[i].key), zap.Int64("offset", doneItems[i].msg.Offset), zap.Duration("lease", r.cfg.Ledger.Lease()))
			}
		}
		// Keys held by another holder: wait for it to finish, or for its lease to
		// expire (a holder that crashed), then try them again.
		pending = held
		if len(pending) > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, max(r.cfg.Ledger.Lease()/4, 50*time.Millisecond))
		}
	}
	return nil
}

// fire runs the acquired items, at most EffectConcurrency at once, each retried with
// backoff on transient failures up to EffectMaxAttempts.
func (r *Runner) fire(ctx context.Context, p *partition, eff *sideeffects.Effect, items []*fxItem) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.EffectConcurrency)
	for _, it := range items {
		g.Go(func() error {
			backoff := r.cfg.RetryBackoffMin
			for {
				it.attempts++
				err := eff.Fire(gctx, sideeffects.Run{Effect: eff.Name(), Key: it.key, Attempt: it.attempts}, it.dec)
				if err == nil {
					it.outcome = FxFired
					r.countEffect(eff.Name(), FxFired)
					return nil
				}
				if gctx.Err() != nil {
					return gctx.Err() // stopping: unsettled; the lease lets the next owner retry
				}
				msg := withoutPersonal(eff.Registry(), it.dec.Event, err.Error())
				if sideeffects.IsPermanent(err) || it.attempts >= r.cfg.EffectMaxAttempts {
					it.outcome, it.err = FxParked, errors.New(msg)
					r.countEffect(eff.Name(), FxParked)
					p.log.Warn("effect parked", zap.String("key", it.key), zap.Int64("offset", it.msg.Offset),
						zap.String("event_id", it.dec.ID), zap.Int("attempts", it.attempts), zap.String("error", msg))
					return nil
				}
				r.countEffect(eff.Name(), FxRetried)
				if it.attempts == 1 {
					p.log.Info("effect failed; retrying", zap.String("key", it.key), zap.String("error", msg))
				}
				jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
				select {
				case <-gctx.Done():
					return gctx.Err()
				case <-time.After(backoff + jitter):
				}
				backoff = min(2*backoff, r.cfg.RetryBackoffMax)
			}
		})
	}
	return g.Wait()
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

// retryParkedEffects runs the partition's parked effects an operator asked to retry.
func (r *Runner) retryParkedEffects(ctx context.Context, p *partition, eff *sideeffects.Effect) error {
	var items []*fxItem
	err := r.retry(ctx, p, "load effect retries", func(ctx context.Context) error {
		rows, err := r.cfg.Pool.Query(ctx, `SELECT id, "offset", msg_key, msg_value, msg_headers FROM `+r.tables.parkedEffects+`
			WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5 AND state = 'retry'
			ORDER BY "offset"`, eff.Name(), r.cfg.Projection.Name(), r.cfg.Projection.Version(), r.cfg.Topic, p.key.Partition)
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
			r.countEffect(eff.Name(), FxForgotten)
			continue
		}
		it.key = sideeffects.Key(eff.Name(), ev.ID)
		ready = append(ready, it)
	}
	dctx, cancel := drainContext(ctx, r.cfg.DrainTimeout)
	defer cancel()
	for i := 0; i < len(ready); i += r.cfg.EffectBatchSize {
		if err := r.runEffects(dctx, p, eff, ready[i:min(i+r.cfg.EffectBatchSize, len(ready))]); err != nil {
			return err
		}
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

// countEffect counts an effect run's outcome in metrics and status.
func (r *Runner) countEffect(effect, outcome string) {
	r.metrics.effects.WithLabelValues(effect, outcome).Inc()
	r.status.countEffect(effect, outcome, 1)
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
