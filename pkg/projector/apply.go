package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/judge"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/internal/rmhook"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

// prepare decodes a batch's messages: the CPU part, done before the transaction.
// Personal data is decrypted here, with one key store lookup for the batch; the
// error is that lookup's (transient). The effects run on the same entries once the
// batch committed, so the types they react to are opened too.
func (r *Runner) prepare(ctx context.Context, msgs []kafka.Message) ([]judge.Entry, error) {
	return r.prepareFor(ctx, msgs, r.opens, r.cfg.Projection.Registry().Known, nil)
}

// scratch holds the arrays a fold's reads are decoded into, one read after
// another: a replay decodes a million events, and each read's entries are let go
// once it is applied.
type scratch struct {
	envs    []lane.Envelope
	entries []judge.Entry
	decoded []events.Decoded // the events handed to Preload
}

// prepareFor reads msgs as entries, opening the personal data of the types open
// says and decoding (with the projection's registry) the types decode says. With
// sc, the entries are made in its arrays, overwriting the last read's.
func (r *Runner) prepareFor(ctx context.Context, msgs []kafka.Message, open, decode func(string) bool, sc *scratch) ([]judge.Entry, error) {
	reg := r.cfg.Projection.Registry()
	var envBuf []lane.Envelope
	var out []judge.Entry
	if sc != nil {
		envBuf, out = sc.envs, sc.entries
	}
	envs, err := r.env.ReadEnvelopesInto(ctx, reg, msgs, open, envBuf)
	if err != nil {
		return nil, err
	}
	out = slices.Grow(out[:0], len(msgs))[:len(msgs)]
	for i, m := range msgs {
		e := judge.Entry{Msg: m, Behind: -1}
		ev, err := envs[i].Event, envs[i].Problem
		e.Event = ev
		switch {
		case err != nil:
			e.Unread = err
			e.Problem = fmt.Errorf("undecodable: %w", err)
		case !decode(ev.Type):
			// Unknown types are settled by policy in walk; the envelope still counts.
		default:
			d, err := reg.Decode(ev)
			if err != nil {
				e.Problem = fmt.Errorf("undecodable %s: %w", ev.Type, err)
			} else {
				e.Decoded = &d
			}
		}
		out[i] = e
	}
	if sc != nil {
		clear(envs) // their events are in out: the array holds nothing until the next read
		sc.envs, sc.entries = envs, out
	}
	return out, nil
}

// outcome counts what a transaction did.
type outcome struct {
	applied, ignored, duplicates, parked int
	parkedSubjects                       map[string]int64 // subject -> first offset parked here
}

// poisonError reports an event whose handler failed permanently in careful mode when
// the transaction could not be rolled back to its savepoint.
type poisonError struct {
	offset int64
	err    error
}

func (e *poisonError) Error() string {
	return fmt.Sprintf("event at offset %d failed and its transaction could not continue: %v", e.offset, e.err)
}

// errCareful asks for the batch again, event by event under savepoints, to find and
// park the events whose writes fail.
var errCareful = errors.New("a statement failed: retrying event by event")

// walk settles entries in order: park, skip as duplicate, ignore, or apply through
// the projection's handler. judge decides all but the handler's outcome; in careful
// mode each applied event runs under a savepoint and a failing one parks; otherwise
// any handler or statement error returns errCareful (or the transient error itself).
func (r *Runner) walk(ctx context.Context, w *readmodel.Writer, p *partition, st *judge.Marks, entries []judge.Entry, careful, retry bool, known map[int64]error) (outcome, error) {
	out := outcome{parkedSubjects: map[string]int64{}}
	err := r.walkOn(ctx, w, p, st, entries, careful, retry, known, &out)
	return out, err
}

// walkOn is walk adding to out: a fold walks its reads one after another, and an
// aggregate parked in one holds its events in the next.
func (r *Runner) walkOn(ctx context.Context, w *readmodel.Writer, p *partition, st *judge.Marks, entries []judge.Entry, careful, retry bool, known map[int64]error, out *outcome) error {
	rules := r.rules(p, retry)
	for i := range entries {
		e := &entries[i]
		v := rules.Judge(e, st, out.parkedSubjects, p.parked)
		if v.Act == judge.Apply && careful && known[e.Msg.Offset] != nil {
			// Found poisonous in an earlier careful attempt whose rollback failed.
			v = judge.ParkVerdict("handler: "+known[e.Msg.Offset].Error(), -1)
		}
		if v.Act == judge.Apply {
			reason, err := r.applyOne(ctx, w, e, i, careful)
			if err != nil {
				return err
			}
			if reason != "" {
				v = judge.ParkVerdict(reason, -1)
			}
		}
		r.record(out, e, v)
		switch v.Act {
		case judge.Apply, judge.Ignore:
			st.Mark(e)
		}
	}
	return nil
}

// record writes an event's verdict on the entry and in the batch's outcome.
func (r *Runner) record(out *outcome, e *judge.Entry, v judge.Verdict) {
	e.Act, e.Gap, e.Stale, e.Alone, e.Behind = v.Act, v.Gap, v.Stale, v.Alone, v.Behind
	e.Reason = ""
	switch v.Act {
	case judge.Apply:
		out.applied++
	case judge.Ignore:
		out.ignored++
	case judge.Duplicate:
		out.duplicates++
	case judge.Park:
		e.Reason = lane.WithoutPersonal(r.cfg.Projection.Registry(), e.Event, v.Reason)
		out.parked++
		if subj := e.Subject(); subj != "" && !v.Alone {
			if _, ok := out.parkedSubjects[subj]; !ok {
				out.parkedSubjects[subj] = e.Msg.Offset
			}
		}
	}
}

// applyOne runs an event's handler. In careful mode it runs under a savepoint, and
// a permanent failure is rolled back to it and returned as the reason to park.
func (r *Runner) applyOne(ctx context.Context, w *readmodel.Writer, e *judge.Entry, i int, careful bool) (string, error) {
	sp := fmt.Sprintf("projector_event_%d", i)
	if careful {
		// The savepoint goes in its own round trip, so that a handler statement
		// pgx fails to prepare or encode cannot take the savepoint with it.
		w.Exec("SAVEPOINT " + sp)
		if err := w.Flush(ctx); err != nil {
			return "", err
		}
	}
	err := r.cfg.Projection.Apply(ctx, w, *e.Decoded)
	if careful && err == nil {
		err = w.Flush(ctx)
	}
	if err == nil {
		if careful {
			w.Exec("RELEASE SAVEPOINT " + sp)
		}
		return "", nil
	}
	if readmodel.IsTransient(err) || ctx.Err() != nil {
		return "", err
	}
	if !careful {
		return "", errCareful
	}
	w.Discard() // what the failing handler queued must not run
	w.Exec("ROLLBACK TO SAVEPOINT " + sp)
	if ferr := w.Flush(ctx); ferr != nil {
		// The transaction cannot go on (pgx may have closed the connection on an
		// encoding error): remember the event and start over.
		return "", &poisonError{offset: e.Msg.Offset, err: err}
	}
	return "handler: " + err.Error(), nil
}

// begin opens a batch transaction and a writer over it with the reads of the
// sequence marks and seen ids the entries need queued, not sent. Nothing goes to
// PostgreSQL yet: the BEGIN and the SET LOCALs that set the projection's search
// path and the commit's durability (r.beginSQL) go first in the transaction's first
// round trip, with the offset write, the marks' reads and the row loads (see
// batchTx); st is filled once that is sent.
func (r *Runner) begin(ctx context.Context, entries []judge.Entry) (pgx.Tx, *readmodel.Writer, *judge.Marks, error) {
	return r.beginWith(ctx, r.beginSQL, entries)
}

// beginWith is begin with the statements that open the transaction, sql.
func (r *Runner) beginWith(ctx context.Context, sql []string, entries []judge.Entry) (pgx.Tx, *readmodel.Writer, *judge.Marks, error) {
	c, err := r.cfg.Pool.Acquire(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	tx := &batchTx{conn: c, begin: sql}
	st := &judge.Marks{Aggs: map[string]judge.Aggregate{}, SeenIDs: map[string]bool{}, Changed: map[string]judge.Aggregate{}}
	w := readmodel.NewWriter(tx)
	// The row loads name their tables in the projection's schema: they may be
	// prepared before the search path is set (see batchTx).
	rmhook.Schema(w, r.cfg.Projection.Schema())
	r.queueJudgeReads(w, st, entries)
	return tx, w, st, nil
}

// queueJudgeReads queues on w the reads of the sequence marks and seen ids that
// entries need and st has not asked for yet; st is filled once they are sent. A
// subject or id asked for is in st from then on, found or not, so that a fold asks
// for each once.
func (r *Runner) queueJudgeReads(w *readmodel.Writer, st *judge.Marks, entries []judge.Entry) {
	var subjects, ids []string
	for i := range entries {
		e := &entries[i]
		// A subject or id that PostgreSQL text cannot hold (a poison event's invalid
		// UTF-8 or NUL) has no mark to look up, and sending it would fail the batch.
		if e.Event.Sequence > 0 {
			s := e.Subject()
			if _, asked := st.Aggs[s]; !asked && judge.Storable(s) {
				st.Aggs[s] = judge.Aggregate{}
				subjects = append(subjects, s)
			}
		} else if id := e.Event.ID; id != "" && judge.Storable(id) {
			if _, asked := st.SeenIDs[id]; !asked {
				st.SeenIDs[id] = false
				ids = append(ids, id)
			}
		}
	}
	pn, pv := r.cfg.Projection.Name(), r.cfg.Projection.Version()
	if len(subjects) > 0 {
		store.QueueLoadAggregates(w, r.cfg.Schema, pn, pv, subjects, func(s string, seq int64, id string, recent []byte) {
			st.Aggs[s] = judge.Aggregate{Seq: uint64(seq), ID: id, Recent: recent, Stored: true}
		})
	}
	if len(ids) > 0 {
		store.QueueLoadEventIDs(w, r.cfg.Schema, pn, pv, ids, func(id string) { st.SeenIDs[id] = true })
	}
}

// report logs and counts, once per event, what a committed batch applied out of the
// expected order: sequence gaps and stale sequences (GapWarn applies them).
func (r *Runner) report(p *partition, entries []judge.Entry) {
	for i := range entries {
		e := &entries[i]
		if !e.Gap && !e.Stale {
			continue
		}
		if e.Gap {
			r.metrics.Gaps.Inc()
		} else {
			r.metrics.OutOfOrder.Inc()
		}
		if e.Act != judge.Apply {
			continue // parked: its reason says it
		}
		msg := "sequence gap: applied an event that skips ahead of its aggregate"
		if e.Stale {
			msg = "stale sequence: applied an event at or below its aggregate's sequence, whose id was never applied"
		}
		p.Log.Warn(msg, zap.String("subject", e.Subject()), zap.Uint64("aggregate_sequence", e.Prev.Seq),
			zap.String("aggregate_event_id", e.Prev.ID), zap.Uint64("sequence", e.Event.Sequence), zap.String("event_id", e.Event.ID),
			zap.Int64("offset", e.Msg.Offset))
	}
}

// queueMarks queues the sequence marks and seen ids the transaction changed.
func (r *Runner) queueMarks(w *readmodel.Writer, st *judge.Marks) {
	pn, pv := r.cfg.Projection.Name(), r.cfg.Projection.Version()
	if len(st.Changed) > 0 {
		subj := make([]string, 0, len(st.Changed))
		for s := range st.Changed {
			subj = append(subj, s)
		}
		slices.Sort(subj) // every transaction takes the marks' row locks in one order
		m := marksOf(st, subj)
		store.QueueSaveAggregates(w, r.cfg.Schema, pn, pv, m.subjects, m.seqs, m.ids, m.recent)
	}
	if len(st.NewIDs) > 0 {
		store.QueueSaveEventIDs(w, r.cfg.Schema, pn, pv, st.NewIDs)
	}
}

// marks are sequence marks as their statements take them, column by column.
type marks struct {
	subjects, ids []string
	seqs          []int64
	recent        [][]byte
}

// marksOf returns the marks st changed of subjects.
func marksOf(st *judge.Marks, subjects []string) marks {
	m := marks{subjects: subjects, ids: make([]string, len(subjects)), seqs: make([]int64, len(subjects)), recent: make([][]byte, len(subjects))}
	for i, s := range subjects {
		a := st.Changed[s]
		m.ids[i], m.seqs[i], m.recent[i] = a.ID, int64(a.Seq), a.Recent
	}
	return m
}

// marksCopyMin is the fewest new marks a fold writes by COPY rather than in its
// upsert (as readmodel's copyMin for rows).
const marksCopyMin = 64

// copyNewMarks writes by COPY the marks f changed that its reads found absent from
// their table, and leaves the others in f.st.Changed for the upsert. COPY inserts a
// mark for about two thirds of the upsert's cost in PostgreSQL (each new mark there
// probes the index, inserts speculatively and confirms); a replay's marks are
// nearly all new. A mark another transaction inserted since the read fails the COPY
// on its key, and the fold with it: its events are applied again batch by batch,
// whose upsert takes the mark as it is.
func (r *Runner) copyNewMarks(ctx context.Context, f *fold) error {
	var fresh []string
	for s, a := range f.st.Changed {
		if !a.Stored {
			fresh = append(fresh, s)
		}
	}
	if len(fresh) < marksCopyMin {
		return nil
	}
	slices.Sort(fresh)
	m := marksOf(f.st, fresh)
	if err := store.CopyAggregates(ctx, f.tx, r.cfg.Schema, r.cfg.Projection.Name(), r.cfg.Projection.Version(), m.subjects, m.seqs, m.ids, m.recent); err != nil {
		return err
	}
	for _, s := range fresh {
		delete(f.st.Changed, s)
	}
	return nil
}

// queueAdvance queues the fenced offset write; fenced reports a mismatch.
func (r *Runner) queueAdvance(w *readmodel.Writer, p *partition, next, consumed int64) {
	r.env.QueueAdvance(w, &p.Lane, next, consumed)
}

// applyOnce runs one batch in one transaction. It returns errCareful when a
// statement or handler failed outside careful mode.
func (r *Runner) applyOnce(ctx context.Context, p *partition, entries []judge.Entry, careful bool, known map[int64]error) (outcome, error) {
	tx, w, st, err := r.begin(ctx, entries)
	if err != nil {
		return outcome{}, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	next := entries[len(entries)-1].Msg.Offset + 1
	r.queueAdvance(w, p, next, int64(len(entries)))
	if careful {
		// Learn of fencing before the slow, event-by-event work.
		if err := w.Flush(ctx); err != nil {
			return outcome{}, err
		}
	}
	if err := r.preload(ctx, w, entries, careful); err != nil {
		return outcome{}, err
	}
	out, err := r.walk(ctx, w, p, st, entries, careful, false, known)
	if err != nil {
		return out, err
	}
	r.queueMarks(w, st)
	for i := range entries {
		if entries[i].Act == judge.Park {
			r.parking.QueuePark(w, p.Key, &entries[i])
		}
	}
	if err := rmhook.Commit(ctx, w); err != nil {
		if !careful && !errors.Is(err, offsets.ErrFenced) && !readmodel.IsTransient(err) {
			return out, errCareful
		}
		return out, err
	}
	return out, nil
}

// batchTx is a batch's transaction on a connection of its own. Its BEGIN and SET
// LOCALs wait to go first in its first round trip; its last round trip carries its
// COMMIT (rmhook.Commit). A live batch thus takes two round trips, not three.
//
// pgx prepares the statements of a batch it has not seen on the connection before,
// in a round trip of their own, before it runs any of them: a statement in the
// first round trip must not depend on the search path its SET LOCAL sets. The
// runtime's own statements name their schema, and the row loads name their tables
// in the projection's (readmodel's loadsIn); the handlers' statements come in later
// round trips. What is sent through the transaction itself (Exec, Query, CopyFrom)
// sends the opening statements first, alone, if they have not gone yet.
//
// Rollback ends it either way: it rolls back what did not commit, and gives the
// connection back to the pool.
type batchTx struct {
	conn  *pgxpool.Conn
	begin []string // the statements that open the transaction, until they are sent
}

// opening returns b with the transaction's opening statements before its own, if
// they have not been sent; b as it is otherwise.
func (t *batchTx) opening(b *pgx.Batch) *pgx.Batch {
	if t.begin == nil {
		return b
	}
	out := &pgx.Batch{}
	for _, sql := range t.begin {
		out.Queue(sql)
	}
	out.QueuedQueries = append(out.QueuedQueries, b.QueuedQueries...)
	t.begin = nil
	return out
}

// opened sends the opening statements alone, if they have not been sent.
func (t *batchTx) opened(ctx context.Context) error {
	if t.begin == nil {
		return nil
	}
	return t.conn.SendBatch(ctx, t.opening(&pgx.Batch{})).Close()
}

// SendBatch sends b in the transaction; the first one opens it.
func (t *batchTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.conn.SendBatch(ctx, t.opening(b))
}

// Exec runs sql in the transaction.
func (t *batchTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.opened(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.conn.Exec(ctx, sql, args...)
}

// Query runs sql in the transaction.
func (t *batchTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.opened(ctx); err != nil {
		return nil, err
	}
	return t.conn.Query(ctx, sql, args...)
}

// QueryRow runs sql in the transaction.
func (t *batchTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.opened(ctx); err != nil {
		return errRow{err}
	}
	return t.conn.QueryRow(ctx, sql, args...)
}

// CopyFrom copies rows in the transaction.
func (t *batchTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.opened(ctx); err != nil {
		return 0, err
	}
	return t.conn.CopyFrom(ctx, table, cols, src)
}

// Prepare prepares sql on the transaction's connection.
func (t *batchTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.conn.Conn().Prepare(ctx, name, sql)
}

// Begin is not supported: a batch's savepoints are statements of its writer.
func (t *batchTx) Begin(context.Context) (pgx.Tx, error) {
	return nil, errors.New("projector: a batch transaction has no nested transactions")
}

// LargeObjects is not supported: its zero value fails.
func (t *batchTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

// Conn returns the transaction's connection.
func (t *batchTx) Conn() *pgx.Conn { return t.conn.Conn() }

// Commit commits what the transaction sent; one that sent nothing has nothing to
// commit.
func (t *batchTx) Commit(ctx context.Context) error {
	if t.begin != nil || t.conn == nil {
		return nil
	}
	_, err := t.conn.Exec(ctx, "COMMIT")
	return err
}

// Rollback rolls back unless the transaction committed or never opened, and
// releases the connection; later calls do nothing.
func (t *batchTx) Rollback(ctx context.Context) error {
	if t.conn == nil {
		return nil
	}
	defer func() { t.conn.Release(); t.conn = nil }()
	if t.conn.Conn().PgConn().TxStatus() == 'I' {
		return nil // committed in the batch's last round trip, or never opened
	}
	_, err := t.conn.Exec(ctx, "ROLLBACK")
	return err
}

// errRow is the row of a query that could not be sent.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
