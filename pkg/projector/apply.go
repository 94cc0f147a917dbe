package projector

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
)

type action int

const (
	actApply action = iota
	actIgnore
	actDuplicate
	actPark
)

// entry is one message of a batch on its way through a transaction.
type entry struct {
	msg     kafka.Message
	ev      events.Event
	decoded *events.Decoded // nil when the type is not registered (or not decoded for effects)
	unread  error           // the record's own problem: not an event, or its personal data unreadable
	problem error           // a permanent problem found while decoding
	act     action
	reason  string // why it parks
	behind  int64  // the offset it parks behind, or -1
	gap     bool   // its sequence skipped ahead of its aggregate's
	stale   bool   // its sequence is at or below its aggregate's, with an id not applied
	alone   bool   // parked without holding its aggregate's later events
	prev    aggState
	parkID  int64 // in a retry: the parked row
}

func (e *entry) subject() string {
	if e.ev.Subject != "" {
		return e.ev.Subject
	}
	return string(e.msg.Key)
}

// prepare decodes a batch's messages: the CPU part, done before the transaction.
// Personal data is decrypted here, with one key store lookup for the batch; the
// error is that lookup's (transient). The effects run on the same entries once the
// batch committed, so the types they react to are opened too.
func (r *Runner) prepare(ctx context.Context, msgs []kafka.Message) ([]entry, error) {
	return r.prepareFor(ctx, msgs, r.opens, r.cfg.Projection.Registry().Known)
}

// prepareFor reads msgs as entries, opening the personal data of the types open
// says and decoding (with the projection's registry) the types decode says.
func (r *Runner) prepareFor(ctx context.Context, msgs []kafka.Message, open, decode func(string) bool) ([]entry, error) {
	reg := r.cfg.Projection.Registry()
	envs, err := r.env.ReadEnvelopes(ctx, reg, msgs, open)
	if err != nil {
		return nil, err
	}
	out := make([]entry, len(msgs))
	for i, m := range msgs {
		e := entry{msg: m, behind: -1}
		ev, err := envs[i].Event, envs[i].Problem
		e.ev = ev
		switch {
		case err != nil:
			e.unread = err
			e.problem = fmt.Errorf("undecodable: %w", err)
		case !decode(ev.Type):
			// Unknown types are settled by policy in walk; the envelope still counts.
		default:
			d, err := reg.Decode(ev)
			if err != nil {
				e.problem = fmt.Errorf("undecodable %s: %w", ev.Type, err)
			} else {
				e.decoded = &d
			}
		}
		out[i] = e
	}
	return out, nil
}

// dedupeWindow is how many of an aggregate's last applied events are remembered,
// as (sequence, id hash): the proof that a late copy of one of them is a duplicate.
// A retried write whose copy lands within this many events of its aggregate is
// recognised and skipped. An event at or below its aggregate's sequence that is not
// a proven duplicate is never dropped: within the window's reach it is applied
// (GapWarn) or parked; beyond it, or claiming a sequence another id holds, it parks,
// without holding its aggregate back, for an operator to retry or skip.
//
// Ids are remembered by their 64-bit xxhash, which keeps the window at about 10
// bytes an event: two different ids of one aggregate, 32 events apart, are taken
// for one with a probability of about 2^-59.
const dedupeWindow = 32

// applied is one applied event of an aggregate, kept in its window.
type applied struct {
	seq  uint64
	hash uint64 // xxhash of the event id
}

func idHash(id string) uint64 { return xxhash.Sum64String(id) }

// encodeWindow packs a window for its bytea column: per event, the sequence as a
// uvarint, then the id's hash in 8 bytes, little-endian.
func encodeWindow(w []applied) []byte {
	b := make([]byte, 0, len(w)*(binary.MaxVarintLen64+8))
	for _, a := range w {
		b = binary.AppendUvarint(b, a.seq)
		b = binary.LittleEndian.AppendUint64(b, a.hash)
	}
	return b
}

// decodeWindow unpacks a window. A damaged one decodes as far as it is whole: a
// window cut short only makes more events park, never one be skipped.
func decodeWindow(b []byte) []applied {
	var w []applied
	for len(b) > 0 {
		seq, n := binary.Uvarint(b)
		if n <= 0 || len(b) < n+8 {
			break
		}
		w = append(w, applied{seq: seq, hash: binary.LittleEndian.Uint64(b[n:])})
		b = b[n+8:]
	}
	return w
}

// aggState is an aggregate's mark: its highest applied sequence, the event that
// holds it, and its last applied events.
type aggState struct {
	seq    uint64
	id     string
	recent []applied // in the order applied, at most dedupeWindow
}

// start marks the beginning of an aggregate's history in its window: while it is
// there, the window holds every event the aggregate ever applied.
var start = applied{}

// with returns the mark after an event with seq and id was applied.
func (a aggState) with(seq uint64, id string) aggState {
	old := a.recent
	if a.seq == 0 && len(old) == 0 {
		old = []applied{start} // the aggregate's first event
	}
	recent := make([]applied, 0, min(len(old)+1, dedupeWindow))
	if n := len(old) + 1 - dedupeWindow; n > 0 {
		recent = append(recent, old[n:]...)
	} else {
		recent = append(recent, old...)
	}
	recent = append(recent, applied{seq: seq, hash: idHash(id)})
	if seq > a.seq {
		a.seq, a.id = seq, id
	}
	a.recent = recent
	return a
}

// holds reports whether id is among the aggregate's recently applied events.
func (a aggState) holds(id string) bool {
	if id == a.id {
		return true
	}
	h := idHash(id)
	for i := len(a.recent) - 1; i >= 0; i-- {
		if a.recent[i].hash == h && a.recent[i] != start {
			return true
		}
	}
	return false
}

// holder reports whether the window remembers an event applied with seq, and its
// id when it is the one holding the aggregate's highest sequence.
func (a aggState) holder(seq uint64) (string, bool) {
	if seq == a.seq && a.id != "" {
		return a.id, true
	}
	for _, r := range a.recent {
		if r.seq == seq && r != start {
			return "", true
		}
	}
	return "", false
}

// reaches reports whether the window remembers every applied event at seq or
// above, so that an event at seq whose id it does not hold was never applied: when
// it still holds the start of the aggregate's history, or seq is at or above the
// lowest sequence it holds (an aggregate's sequences are applied mostly in order, so
// an event evicted from the window had a lower one).
func (a aggState) reaches(seq uint64) bool {
	lowest, any := uint64(0), false
	for _, r := range a.recent {
		if r == start {
			return true
		}
		if !any || r.seq < lowest {
			lowest, any = r.seq, true
		}
	}
	return any && seq >= lowest
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

// txState is one transaction's view: loaded sequence marks and seen ids.
type txState struct {
	aggs    map[string]aggState
	seenIDs map[string]bool
	changed map[string]aggState
	newIDs  []string
}

// walk settles entries in order: park, skip as duplicate, ignore, or apply through
// the projection's handler. judge decides all but the handler's outcome; in careful
// mode each applied event runs under a savepoint and a failing one parks; otherwise
// any handler or statement error returns errCareful (or the transient error itself).
func (r *Runner) walk(ctx context.Context, w *readmodel.Writer, p *partition, st *txState, entries []entry, careful, retry bool, known map[int64]error) (outcome, error) {
	out := outcome{parkedSubjects: map[string]int64{}}
	rules := r.rules(p, retry)
	for i := range entries {
		e := &entries[i]
		v := rules.judge(e, st, out.parkedSubjects, p.parked)
		if v.act == actApply && careful && known[e.msg.Offset] != nil {
			// Found poisonous in an earlier careful attempt whose rollback failed.
			v = parkVerdict("handler: "+known[e.msg.Offset].Error(), -1)
		}
		if v.act == actApply {
			reason, err := r.applyOne(ctx, w, e, i, careful)
			if err != nil {
				return out, err
			}
			if reason != "" {
				v = parkVerdict(reason, -1)
			}
		}
		r.record(&out, e, v)
		switch v.act {
		case actApply, actIgnore:
			st.mark(e)
		}
	}
	return out, nil
}

// record writes an event's verdict on the entry and in the batch's outcome.
func (r *Runner) record(out *outcome, e *entry, v verdict) {
	e.act, e.gap, e.stale, e.alone, e.behind = v.act, v.gap, v.stale, v.alone, v.behind
	e.reason = ""
	switch v.act {
	case actApply:
		out.applied++
	case actIgnore:
		out.ignored++
	case actDuplicate:
		out.duplicates++
	case actPark:
		e.reason = lane.WithoutPersonal(r.cfg.Projection.Registry(), e.ev, v.reason)
		out.parked++
		if subj := e.subject(); subj != "" && !v.alone {
			if _, ok := out.parkedSubjects[subj]; !ok {
				out.parkedSubjects[subj] = e.msg.Offset
			}
		}
	}
}

// mark records an applied (or ignored) event in the transaction's marks.
func (st *txState) mark(e *entry) {
	if e.ev.Sequence > 0 {
		subj := e.subject()
		a := st.aggs[subj].with(e.ev.Sequence, e.ev.ID)
		st.aggs[subj], st.changed[subj] = a, a
		return
	}
	st.seenIDs[e.ev.ID] = true
	st.newIDs = append(st.newIDs, e.ev.ID)
}

// applyOne runs an event's handler. In careful mode it runs under a savepoint, and
// a permanent failure is rolled back to it and returned as the reason to park.
func (r *Runner) applyOne(ctx context.Context, w *readmodel.Writer, e *entry, i int, careful bool) (string, error) {
	sp := fmt.Sprintf("projector_event_%d", i)
	if careful {
		// The savepoint goes in its own round trip, so that a handler statement
		// pgx fails to prepare or encode cannot take the savepoint with it.
		w.Exec("SAVEPOINT " + sp)
		if err := w.Flush(ctx); err != nil {
			return "", err
		}
	}
	err := r.cfg.Projection.Apply(ctx, w, *e.decoded)
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
		return "", &poisonError{offset: e.msg.Offset, err: err}
	}
	return "handler: " + err.Error(), nil
}

// begin opens a batch transaction: the projection's search path, then the sequence
// marks and seen ids the entries need, in one round trip.
func (r *Runner) begin(ctx context.Context, entries []entry) (pgx.Tx, *txState, error) {
	tx, err := r.cfg.Pool.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	st := &txState{aggs: map[string]aggState{}, seenIDs: map[string]bool{}, changed: map[string]aggState{}}
	var subjects, ids []string
	seenSubj := map[string]bool{}
	for i := range entries {
		e := &entries[i]
		// A subject or id that PostgreSQL text cannot hold (a poison event's invalid
		// UTF-8 or NUL) has no mark to look up, and sending it would fail the batch.
		if e.ev.Sequence > 0 {
			if s := e.subject(); !seenSubj[s] && storable(s) {
				seenSubj[s] = true
				subjects = append(subjects, s)
			}
		} else if e.ev.ID != "" && storable(e.ev.ID) {
			ids = append(ids, e.ev.ID)
		}
	}
	pn, pv := r.cfg.Projection.Name(), r.cfg.Projection.Version()
	b := &pgx.Batch{}
	b.Queue(`SET LOCAL search_path TO ` + pgx.Identifier{r.cfg.Projection.Schema()}.Sanitize() + `, public`)
	if len(subjects) > 0 {
		b.Queue(`SELECT subject, last_sequence, last_event_id, recent FROM `+r.tables.Aggregates+`
			WHERE projection = $1 AND version = $2 AND subject = ANY($3)`, pn, pv, subjects).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var s, id string
				var seq int64
				var recent []byte
				if err := rows.Scan(&s, &seq, &id, &recent); err != nil {
					return err
				}
				st.aggs[s] = aggState{seq: uint64(seq), id: id, recent: decodeWindow(recent)}
			}
			return rows.Err()
		})
	}
	if len(ids) > 0 {
		b.Queue(`SELECT event_id FROM `+r.tables.EventIDs+` WHERE projection = $1 AND version = $2 AND event_id = ANY($3)`,
			pn, pv, ids).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				st.seenIDs[id] = true
			}
			return rows.Err()
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		_ = tx.Rollback(ctx)
		return nil, nil, err
	}
	return tx, st, nil
}

// report logs and counts, once per event, what a committed batch applied out of the
// expected order: sequence gaps and stale sequences (GapWarn applies them).
func (r *Runner) report(p *partition, entries []entry) {
	for i := range entries {
		e := &entries[i]
		if !e.gap && !e.stale {
			continue
		}
		if e.gap {
			r.metrics.gaps.Inc()
		} else {
			r.metrics.outOfOrder.Inc()
		}
		if e.act != actApply {
			continue // parked: its reason says it
		}
		msg := "sequence gap: applied an event that skips ahead of its aggregate"
		if e.stale {
			msg = "stale sequence: applied an event at or below its aggregate's sequence, whose id was never applied"
		}
		p.Log.Warn(msg, zap.String("subject", e.subject()), zap.Uint64("aggregate_sequence", e.prev.seq),
			zap.String("aggregate_event_id", e.prev.id), zap.Uint64("sequence", e.ev.Sequence), zap.String("event_id", e.ev.ID),
			zap.Int64("offset", e.msg.Offset))
	}
}

// queueMarks queues the sequence marks and seen ids the transaction changed.
func (r *Runner) queueMarks(w *readmodel.Writer, st *txState) {
	pn, pv := r.cfg.Projection.Name(), r.cfg.Projection.Version()
	if len(st.changed) > 0 {
		subj := make([]string, 0, len(st.changed))
		seqs := make([]int64, 0, len(st.changed))
		ids := make([]string, 0, len(st.changed))
		recent := make([][]byte, 0, len(st.changed))
		for s, a := range st.changed {
			subj, seqs, ids, recent = append(subj, s), append(seqs, int64(a.seq)), append(ids, a.id), append(recent, encodeWindow(a.recent))
		}
		w.Exec(`INSERT INTO `+r.tables.Aggregates+` (projection, version, subject, last_sequence, last_event_id, recent)
			SELECT $1, $2, s, q, i, r FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bytea[]) AS t(s, q, i, r)
			ON CONFLICT (projection, version, subject) DO UPDATE
			   SET last_sequence = EXCLUDED.last_sequence, last_event_id = EXCLUDED.last_event_id, recent = EXCLUDED.recent`,
			pn, pv, subj, seqs, ids, recent)
	}
	if len(st.newIDs) > 0 {
		w.Exec(`INSERT INTO `+r.tables.EventIDs+` (projection, version, event_id)
			SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING`, pn, pv, st.newIDs)
	}
}

func (r *Runner) queueParkInsert(w *readmodel.Writer, p *partition, e *entry) {
	headers, _ := json.Marshal(e.msg.Headers)
	var behind *int64
	if e.behind >= 0 {
		behind = &e.behind
	}
	w.Exec(`INSERT INTO `+r.tables.Parked+` (projection, version, topic, partition, "offset", subject, event_id, event_type,
			error, behind, msg_key, msg_value, msg_headers, holds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (projection, version, topic, partition, "offset") DO UPDATE
		   SET state = 'parked', error = EXCLUDED.error, behind = EXCLUDED.behind, holds = EXCLUDED.holds,
		       attempts = `+r.tables.Parked+`.attempts + 1, updated_at = now()`,
		p.Key.Projection, p.Key.Version, p.Key.Topic, p.Key.Partition, e.msg.Offset, text(e.subject()), text(e.ev.ID), text(e.ev.Type),
		text(e.reason), behind, e.msg.Key, e.msg.Value, headers, !e.alone)
}

// text makes a string safe for a PostgreSQL text column: a poison event's key, id or
// type may hold invalid UTF-8 or NUL bytes, and parking it must not fail on them.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// storable reports whether s can be sent to PostgreSQL as text as it is.
func storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// queueAdvance queues the fenced offset write; fenced reports a mismatch.
func (r *Runner) queueAdvance(w *readmodel.Writer, p *partition, next, consumed int64) {
	r.env.QueueAdvance(w, &p.Lane, next, consumed)
}

// applyOnce runs one batch in one transaction. It returns errCareful when a
// statement or handler failed outside careful mode.
func (r *Runner) applyOnce(ctx context.Context, p *partition, entries []entry, careful bool, known map[int64]error) (outcome, error) {
	tx, st, err := r.begin(ctx, entries)
	if err != nil {
		return outcome{}, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	w := readmodel.NewWriter(tx)
	next := entries[len(entries)-1].msg.Offset + 1
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
		if entries[i].act == actPark {
			r.queueParkInsert(w, p, &entries[i])
		}
	}
	if err := w.Flush(ctx); err != nil {
		if !careful && !errors.Is(err, offsets.ErrFenced) && !readmodel.IsTransient(err) {
			return out, errCareful
		}
		return out, err
	}
	if err := tx.Commit(ctx); err != nil {
		return out, fmt.Errorf("commit: %w", err)
	}
	return out, nil
}
