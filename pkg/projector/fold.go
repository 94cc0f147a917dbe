package projector

import (
	"context"
	"errors"
	"iter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/effects"
	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/internal/rmhook"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// A fold is several reads of a partition applied in one transaction. While a
// partition replays (the log holds at least another full read at hand), its
// transaction stays open across reads: the rows and sequence marks its events touch
// again and again are loaded once and written once, with one commit, instead of
// once per read. Only the rows stay in memory, not the events: each read's events
// are decoded, judged and applied, then let go. Kafka Streams' record cache and
// Marten's rebuilds fold the same way; the fold ends when it holds
// Config.FoldRows rows and marks, after foldFor, when the log has no full read at
// hand, or at a bounded run's end.
//
// A fold takes the fast path only. Anything that fails in it (a handler, a
// statement, a lost connection, a fenced position at its commit) rolls it back
// whole, and its events are read again from the log and applied batch by batch,
// the path with the retries, the event-by-event isolation of poison and the
// deadlock splitting. A fold's statements run under a short lock_timeout until
// its commit, and its reads after the first load inside a savepoint: a row another
// transaction holds ends the fold there (the read is rolled back to the savepoint,
// the fold commits, and the read is applied as a batch of its own, waiting for the
// row; a first read's fold is given up whole, holding nothing yet), so a fold
// never waits for another transaction's rows while it holds its own, and
// partitions sharing rows do not deadlock.
//
// At most Config.FoldReadsAtOnce folds read at once, across partitions: a fold
// holds a read slot from its first read to its last, and the others wait for one
// holding their first read's records and no connection. Twelve partitions
// replaying on two cores would otherwise hold twelve reads' events where a few keep
// the cores busy (the collector's work under the memory limit grows with what is
// held), and each fold, sharing the cores with eleven others, would cover a third
// of the events in its time. Since nothing in a fold's reads waits for another
// transaction, a slot is never held by a wait on a fold that needs one.

// foldFor bounds how long a fold's transaction stays open: the rows it loaded are
// locked that long, and the partition's status and lag move once per fold. A stop
// does not wait for it: the fold commits at its next read.
const foldFor = 2 * time.Second

// foldLockTimeout is how long a fold's later reads wait for a row another
// transaction holds before the fold commits without them: well below
// PostgreSQL's deadlock_timeout (1 s by default), so that a wait is given up before
// a deadlock would be looked for.
const foldLockTimeout = "50ms"

// takeReadSlot waits for a read slot (Config.FoldReadsAtOnce), or for ctx to end.
func (r *Runner) takeReadSlot(ctx context.Context) error {
	select {
	case r.readSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) giveReadSlot() { <-r.readSlots }

// errContended is a fold's read whose rows another transaction holds: the fold
// commits before it.
var errContended = errors.New("a row of the read is held by another transaction")

// fold is a transaction over several reads of a partition.
type fold struct {
	tx      pgx.Tx
	w       *readmodel.Writer
	st      *judge.Marks
	out     outcome
	start   time.Time
	from    int64 // the stored position it started at
	next    int64 // the offset after its last event
	hw      int64 // the high-water mark its last read saw
	events  int64
	reads   int
	saved   bool                // a savepoint is open: the commit releases it
	types   map[string]struct{} // the types it applied
	passed  effects.Span        // its range, newest event time and events by type, for the effects (effects.Feed.Passed)
	flagged []judge.Entry       // its events parked, or applied out of order: logged and counted once it commits
	sc      scratch             // its reads are decoded into the same arrays
}

// folds reports whether a read should start a fold: folding is on, the partition
// is not applying a failed fold's events again, and the log holds another full read
// at hand.
func (r *Runner) folds(p *partition, msgs []kafka.Message) bool {
	if r.cfg.FoldRows <= 0 || p.Next < p.plainTo {
		return false
	}
	last := msgs[len(msgs)-1]
	return r.moreAtHand(p, last.Offset+1, last.HighWaterMark)
}

// takeFoldSlot reports whether a fold may open now (see Runner.foldSlots); a read
// that finds none applies as a batch.
func (r *Runner) takeFoldSlot() bool {
	select {
	case r.foldSlots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (r *Runner) giveFoldSlot() { <-r.foldSlots }

// moreAtHand reports whether the log holds a full read past next, within a bounded
// run.
func (r *Runner) moreAtHand(p *partition, next, highWater int64) bool {
	return highWater-next >= int64(r.cfg.BatchSize) && !r.beyondStop(p.Key.Partition, next)
}

// applyFolding applies msgs and the reads after them in one fold, then commits it.
// A fold that cannot commit is rolled back, and its events applied again from the
// log batch by batch (see fold).
func (r *Runner) applyFolding(genCtx context.Context, p *partition, rd *lane.Reader, msgs []kafka.Message) error {
	// The read slot first: a fold waiting for one holds no connection. It is kept
	// from the first read to the last, and given back before the commit, whose
	// writes may wait for other transactions' rows.
	if r.takeReadSlot(genCtx) != nil {
		return nil // the generation ended: nothing was applied, the worker stops
	}
	held := true
	give := func() {
		if held {
			held = false
			r.giveReadSlot()
		}
	}
	defer give()
	ctx, cancel := lane.DrainContext(genCtx, r.cfg.DrainTimeout)
	defer cancel()
	tx, w, st, err := r.beginWith(ctx, r.foldSQL, nil)
	if err != nil {
		give()
		return r.applySplitting(genCtx, p, msgs) // its retries wait for the database
	}
	f := &fold{tx: tx, w: w, st: st, out: outcome{parkedSubjects: map[string]int64{}}, start: time.Now(),
		from: p.Next, next: p.Next, types: map[string]struct{}{}}
	defer func() { _ = tx.Rollback(ctx) }()
	for {
		err := r.foldRead(ctx, p, f, msgs)
		if err != nil {
			give()
		}
		if errors.Is(err, errContended) {
			if err := r.commitFold(genCtx, ctx, p, f); err != nil {
				return r.unfold(ctx, p, rd, f, msgs, err)
			}
			_ = tx.Rollback(ctx) // a first read's fold commits nothing: its connection goes back
			return r.applySplitting(genCtx, p, msgs)
		}
		if err != nil {
			return r.unfold(ctx, p, rd, f, msgs, err)
		}
		if !r.foldsOn(p, f) {
			break
		}
		next, err := rd.ReadBatch(genCtx)
		if err != nil || genCtx.Err() != nil || len(next) == 0 {
			break // the fold commits what it has; the next read starts over at its end
		}
		msgs, err = r.keepFrom(ctx, p, f.next, next)
		if err != nil {
			give()
			if cerr := r.commitFold(genCtx, ctx, p, f); cerr != nil {
				return r.unfold(ctx, p, rd, f, nil, cerr)
			}
			return err
		}
		if len(msgs) == 0 {
			break // past a bounded run's end
		}
	}
	give()
	if err := r.commitFold(genCtx, ctx, p, f); err != nil {
		return r.unfold(ctx, p, rd, f, nil, err)
	}
	return nil
}

// foldsOn reports whether f reads on: it is young, holds fewer rows and marks
// than FoldRows, and the log holds another full read at hand.
func (r *Runner) foldsOn(p *partition, f *fold) bool {
	return time.Since(f.start) < foldFor && rmhook.Held(f.w)+len(f.st.Aggs) < r.cfg.FoldRows &&
		r.moreAtHand(p, f.next, f.hw)
}

// foldRead decodes, loads and applies one read in f. A read after
// the first loads under a savepoint: a row held elsewhere (foldLockTimeout) rolls
// it back to the savepoint and returns errContended, with f as it was before it. A
// first read's returns errContended with nothing to keep.
func (r *Runner) foldRead(ctx context.Context, p *partition, f *fold, msgs []kafka.Message) error {
	entries, err := r.prepareFor(ctx, msgs, r.opens, r.cfg.Projection.Registry().Known, &f.sc)
	if err != nil {
		return err
	}
	w := f.w
	later := f.reads > 0
	if later {
		// What the last read's handlers left queued (Exec statements, parked
		// events) goes first, with the new savepoint, in a round trip of its own: a
		// failure there (a held row too) fails the fold (rolled back whole), never a
		// rollback to a savepoint that would take that read's statements with it,
		// and the savepoint the loads may roll back to is known to stand.
		if f.saved {
			w.Exec("RELEASE SAVEPOINT projector_fold")
		}
		w.Exec("SAVEPOINT projector_fold")
		f.saved = true
		if err := rmhook.Send(ctx, w); err != nil {
			return err
		}
	}
	adding := rmhook.Adding(w)
	// The last read's new rows are written, in the savepoint, before this read's
	// loads: a read rolled back puts them back in memory, written at the commit.
	unspill := rmhook.Spill(w)
	r.queueJudgeReads(w, f.st, entries)
	ds := f.sc.decoded[:0]
	for i := range entries {
		if d := entries[i].Decoded; d != nil {
			ds = append(ds, *d)
		}
	}
	f.sc.decoded = ds
	err = r.cfg.Projection.Preload(ctx, w, ds)
	if err == nil {
		err = rmhook.Send(ctx, w)
	}
	if err != nil {
		if !later && lockNotAvailable(err) {
			return errContended // nothing of the fold is kept: its transaction is given up
		}
		if later && !adding && lockNotAvailable(err) {
			// The failed round trip sent everything queued; what it loaded for this
			// read stays in memory unchanged, and is not written. (With Add's sums
			// pending, a load merges them into the rows it reads, and such a row,
			// its lock gone with the savepoint, must not be written: the fold fails
			// instead.)
			unspill()
			w.Exec("ROLLBACK TO SAVEPOINT projector_fold")
			if rerr := rmhook.Send(ctx, w); rerr != nil {
				return rerr
			}
			return errContended
		}
		return err
	}
	if err := r.walkOn(ctx, w, p, f.st, entries, false, false, nil, &f.out); err != nil {
		if !later && lockNotAvailable(err) {
			return errContended // a handler's own load found a row held: as above
		}
		return err
	}
	r.foldApplied(p, f, msgs, entries)
	return nil
}

// foldApplied records in f a read whose entries its handlers applied: its parked
// events are queued, what it flagged kept for the commit, and its end taken.
func (r *Runner) foldApplied(p *partition, f *fold, msgs []kafka.Message, entries []judge.Entry) {
	for i := range entries {
		e := &entries[i]
		switch {
		case e.Act == judge.Park:
			r.parking.QueuePark(f.w, p.Key, e)
			f.flagged = append(f.flagged, *e)
		case e.Gap || e.Stale:
			f.flagged = append(f.flagged, *e)
		case e.Act == judge.Apply:
			f.types[e.Event.Type] = struct{}{}
		}
	}
	if r.fx != nil {
		countPassed(&f.passed, entries)
	}
	// The arrays are kept for the next read, their events not: the events are
	// let go while the next read is fetched.
	clear(entries)
	clear(f.sc.decoded)
	last := msgs[len(msgs)-1]
	f.next, f.hw = last.Offset+1, last.HighWaterMark
	f.events += int64(len(msgs))
	f.reads++
}

// countPassed adds a read's entries to a fold's span: the newest event time (the
// event's own, else the log's: what an effect's horizon is judged on) and the count
// of each type, of the entries an effect would judge (effects.Engine's effectItems:
// not the records that are no events).
func countPassed(s *effects.Span, entries []judge.Entry) {
	if s.Types == nil {
		s.Types = map[string]int{}
	}
	for i := range entries {
		e := &entries[i]
		var forgotten *shred.Error
		if e.Unread != nil && !errors.As(e.Unread, &forgotten) {
			continue // not an event: the effects pass it by, counting nothing
		}
		when := e.Event.Time
		if when.IsZero() {
			when = e.Msg.Time
		}
		if when.After(s.Newest) {
			s.Newest = when
		}
		s.Types[e.Event.Type]++
	}
}

// lockNotAvailable reports a lock wait given up (lock_timeout, SQLSTATE 55P03).
func lockNotAvailable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// commitFold writes f's rows, marks and position, commits, and records the fold
// as a committed batch.
func (r *Runner) commitFold(genCtx, ctx context.Context, p *partition, f *fold) error {
	if f.reads == 0 {
		return nil
	}
	// The writes wait for rows as a batch's do (they are in key order), and so do
	// the statements the last read's handlers left queued: the timeout goes first,
	// in a round trip of its own, or a row held a moment at the commit would fail
	// the whole fold.
	if _, err := f.tx.Exec(ctx, "SET LOCAL lock_timeout TO DEFAULT"); err != nil {
		return err
	}
	w := f.w
	if f.saved {
		w.Exec("RELEASE SAVEPOINT projector_fold")
	}
	// The position's compare-and-set goes before the COMMIT's round trip, as a
	// batch's does: a fenced position updates no row, which is no error that would
	// stop a COMMIT sent with it, so the fold must learn of it while its
	// transaction is still open. The row it updates stays locked to the commit.
	r.queueAdvance(w, p, f.next, f.events)
	if err := rmhook.Send(ctx, w); err != nil {
		return err
	}
	if err := r.copyNewMarks(ctx, f); err != nil {
		return err
	}
	r.queueMarks(w, f.st)
	if err := rmhook.Commit(ctx, w); err != nil {
		return err
	}
	// The connection goes back to the pool before anything else asks for one (a
	// synchronous snapshot, the next batch): partitions holding theirs while they
	// wait for another would drain the pool.
	_ = f.tx.Rollback(ctx)
	r.metrics.Folds.Observe(float64(f.reads))
	f.passed.From, f.passed.Next, f.passed.Events = f.from, f.next, f.events
	r.committed(genCtx, ctx, p, committedBatch{from: f.from, next: f.next, highWater: f.hw, start: f.start,
		out: f.out, flagged: f.flagged, types: typesOf(f.types), passed: &f.passed})
	return nil
}

// unfold gives up a fold that failed: it is rolled back (by applyFolding), and its
// events, up to the end of the read it failed in (msgs), are read again from the
// stored position and applied batch by batch. A commit refused by the fenced
// position is resolved first, as a batch's is: another member owns the partition
// (the worker stops), or an earlier attempt committed and the acknowledgement was
// lost (the partition moves to the stored position).
func (r *Runner) unfold(ctx context.Context, p *partition, rd *lane.Reader, f *fold, msgs []kafka.Message, err error) error {
	_ = f.tx.Rollback(ctx) // its connection back to the pool first
	if errors.Is(err, offsets.ErrFenced) {
		ok, rerr := r.resync(ctx, p, f.next)
		if rerr != nil {
			return rerr
		}
		if ok {
			rd.Close()
			r.publish(ctx, p, f.from, nil)
			p.Status.Committed(outcome{}.batch(p.Next, f.hw), r.readyLag, p.Log)
			return r.retry(ctx, p, "load parked", func(ctx context.Context) error { return r.loadParked(ctx, p) })
		}
	}
	end := f.next
	if len(msgs) > 0 {
		end = max(end, msgs[len(msgs)-1].Offset+1)
	}
	p.plainTo = max(p.plainTo, end)
	rd.Close() // the next read starts over at the stored position
	r.metrics.Unfolded.Inc()
	p.Log.Info("a fold of reads failed; applying its events again from the log, batch by batch",
		zap.Int64("from", p.Next), zap.Int64("to", end), zap.Int("reads", f.reads), zap.Error(err))
	return nil
}

// typesOf returns the keys of set.
func typesOf(set map[string]struct{}) iter.Seq[string] {
	return func(yield func(string) bool) {
		for t := range set {
			if !yield(t) {
				return
			}
		}
	}
}
