package readmodel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// rowSet is one table's rows in a Writer: its identity map for the batch.
type rowSet interface {
	// queueLoad queues on w the query for the keys wanted and not held (after a
	// race on a new key, with the statement locking the absent ones; the first time
	// in a schema, with the check of the table's column types COPY needs); it
	// returns how many statements it queued.
	queueLoad(w *Writer) int
	// sync queues on w the writes of the rows changed since the last sync (at most
	// a DELETE per DeleteWhere column, one DELETE, a COPY of the new rows and one
	// upsert), in key order, and marks them written; it returns how many
	// statements it queued.
	sync(w *Writer) int
	// drop forgets every row, changed or not; the keys are wanted again.
	drop()
	// spill queues on w the writes of the rows new to the table (keys loaded as
	// absent, then put) and of the rows deleted, and forgets them with the keys
	// known absent, so that a fold holds the rows its events update, not the ones
	// they only insert or delete: a key spilled and read again in the transaction
	// is loaded again. It returns how many statements it queued,
	// and the func that puts the rows back in memory, unwritten, for when the
	// statements are rolled back.
	spill(w *Writer) (int, func())
	// adding reports whether Add's sums wait to be written.
	adding() bool
	// size returns how many keys the set holds in memory (rows, absent keys, and
	// Add's sums not yet written).
	size() int
}

// slot is a key's row in memory: the row when it exists, and whether it changed.
type slot[R any] struct {
	row    R
	exists bool
	dirty  bool
	absent bool       // loaded as absent, and not written since: an insert, not an update
	held   bool       // locked by this transaction: loaded present (FOR UPDATE) or written
	ctid   pgtype.TID // where the row loaded is, while the transaction has not written it
}

// tableState is a Table's identity map in one Writer.
type tableState[K cmp.Ordered, R any] struct {
	t     *Table[K, R]
	rows  map[K]slot[R]
	want  map[K]struct{} // keys to load with the next query
	where map[int][]any  // DeleteWhere values per column, not yet queued
	adds  map[K]R        // Add's deltas summed, for keys not in memory
}

func (s *tableState[K, R]) size() int { return len(s.rows) + len(s.adds) }

func (s *tableState[K, R]) adding() bool { return len(s.adds) > 0 }

func (s *tableState[K, R]) spill(w *Writer) (int, func()) {
	// The DeleteWhere statements not yet queued go first, as at a flush: a row
	// put after a DeleteWhere is kept, so it must be written after the DELETE.
	where := s.where
	n := s.queueWhere(w.batch)
	var fresh, gone, idle []K
	for k, sl := range s.rows {
		switch {
		case sl.dirty && sl.exists && sl.absent:
			fresh = append(fresh, k) // new: inserted
		case sl.dirty && !sl.exists && !sl.absent:
			gone = append(gone, k) // deleted
		case !sl.exists && (sl.absent || !sl.dirty):
			idle = append(idle, k) // not in the table, nothing to write
		}
	}
	if len(fresh)+len(gone)+len(idle) == 0 {
		if n == 0 {
			return 0, nil
		}
		return n, func() { s.where = where }
	}
	n += s.queueGone(w, gone)
	if len(fresh) > 0 {
		slices.Sort(fresh)
		n += s.queuePuts(w, fresh)
	}
	// Forgotten now, so that a read queued after the writes loads them from the
	// table; put back if the writes are rolled back.
	keys := slices.Concat(fresh, gone, idle)
	kept := make([]slot[R], len(keys))
	for i, k := range keys {
		kept[i] = s.rows[k]
		delete(s.rows, k)
	}
	return n, func() {
		s.where = where
		for i, k := range keys {
			s.rows[k] = kept[i]
		}
	}
}

func (s *tableState[K, R]) wantKey(k K) {
	if _, ok := s.rows[k]; !ok {
		s.want[k] = struct{}{}
	}
}

func (s *tableState[K, R]) queueLoad(w *Writer) int {
	b := w.batch
	keys := make([]K, 0, len(s.want))
	for k := range s.want {
		if _, ok := s.rows[k]; !ok {
			keys = append(keys, k)
		}
	}
	clear(s.want)
	if len(keys) == 0 {
		return 0
	}
	slices.Sort(keys)
	t, n := s.t, 1
	if w.schema != "" {
		n += t.queueFitCheck(b, w.schema)
	}
	selects, locks := t.loadsIn(w.schema)
	if t.lockingNewKeys() {
		b.Queue(locks, keys, t.name+":")
		n++
	}
	b.Queue(selects, keys).Query(s.readLoad(keys))
	return n
}

// readLoad returns the reading of the rows a load of keys (sorted) found into the
// identity map: each key asked for ends in it, as found or absent, with the deltas
// added to it before it was read.
func (s *tableState[K, R]) readLoad(keys []K) func(pgx.Rows) error {
	t := s.t
	return func(rows pgx.Rows) error {
		if len(s.rows) == 0 {
			s.rows = make(map[K]slot[R], len(keys)) // sized once, not grown by doubling
		}
		// The rows found go straight into the identity map: no key asked for is in
		// it yet (see above), and nothing else runs while the results are read. A row
		// whose key was not asked for (a citext or char(n) key, equal to the one asked
		// for but not the same bytes) is dropped, as it was: it may be in memory
		// already, changed. A scan that fails leaves none of the keys asked for.
		// One row variable for the whole load, its fields' addresses boxed once:
		// boxing them per row allocated a slice and an interface per column, per row.
		// Each row is copied out of it, and pgx makes every string, byte slice and
		// pointer it scans anew.
		var row R
		var ctid pgtype.TID
		v := reflect.ValueOf(&row).Elem()
		dest := make([]any, len(t.fields)+1)
		dest[0] = &ctid
		for i, f := range t.fields {
			dest[i+1] = v.FieldByIndex(f).Addr().Interface()
		}
		fail := func(err error) error {
			for _, k := range keys {
				delete(s.rows, k)
			}
			return err
		}
		for rows.Next() {
			var zero R
			row = zero
			if err := rows.Scan(dest...); err != nil {
				return fail(err)
			}
			k := t.key(row)
			if _, asked := slices.BinarySearch(keys, k); !asked {
				continue
			}
			sl := slot[R]{row: row, exists: !s.deletedWhere(v), held: true}
			if sl.exists {
				sl.ctid = ctid // a row a DeleteWhere queued will delete is not there to update
			}
			s.rows[k] = sl
		}
		if err := rows.Err(); err != nil {
			return fail(err)
		}
		for _, k := range keys {
			sl, ok := s.rows[k]
			if !ok {
				sl.absent = true // held as absent: not loaded again
			}
			if d, ok := s.adds[k]; ok { // added to before it was read
				if sl.exists {
					t.sum(&sl.row, d)
				} else {
					sl.row, sl.exists = d, true
				}
				sl.dirty = true
				delete(s.adds, k)
			}
			s.rows[k] = sl
		}
		return nil
	}
}

// deletedWhere reports whether a loaded row falls under a DeleteWhere not yet
// written: it is gone for the batch.
func (s *tableState[K, R]) deletedWhere(v reflect.Value) bool {
	for c, vals := range s.where {
		fv := v.FieldByIndex(s.t.fields[c]).Interface()
		for _, x := range vals {
			if fv == x {
				return true
			}
		}
	}
	return false
}

// queueGone queues the deletes of the rows with keys gone (sorted in place): by
// ctid the rows loaded and not written since, by key the others.
func (s *tableState[K, R]) queueGone(w *Writer, gone []K) int {
	if len(gone) == 0 {
		return 0
	}
	t, b, n := s.t, w.batch, 0
	slices.Sort(gone)
	var byKey, atKeys []K
	var at []pgtype.TID
	byCtid := t.writesAt(w.schema)
	for _, k := range gone {
		if c := s.rows[k].ctid; c.Valid && byCtid {
			at, atKeys = append(at, c), append(atKeys, k)
		} else {
			byKey = append(byKey, k)
		}
	}
	if len(at) > 0 {
		b.Queue(t.deletesAt, at, atKeys).Exec(s.checkAt("DELETE", len(at)))
		n++
	}
	if len(byKey) > 0 {
		b.Queue(t.deletes, byKey)
		n++
	}
	return n
}

func (s *tableState[K, R]) sync(w *Writer) int {
	b := w.batch
	n := s.queueWhere(b)
	var gone, put []K
	for k, sl := range s.rows {
		switch {
		case !sl.dirty:
		case sl.exists:
			put = append(put, k)
		case sl.absent:
			// Loaded as absent and deleted: nothing of ours to delete, and a DELETE
			// would remove a row another transaction inserted meanwhile unseen.
			sl.dirty = false
			s.rows[k] = sl
		default:
			gone = append(gone, k)
		}
	}
	n += s.queueGone(w, gone)
	if len(put) > 0 {
		slices.Sort(put)
		n += s.queuePuts(w, put)
	}
	n += s.queueAdds(w.batch)
	for _, k := range gone {
		prev := s.rows[k]
		s.rows[k] = slot[R]{absent: prev.absent, held: prev.held} // a key loaded as absent stays one; no ctid: written; a blind delete locked nothing
	}
	for _, k := range put {
		sl := s.rows[k]
		sl.dirty, sl.absent, sl.held, sl.ctid = false, false, true, pgtype.TID{} // written: the row has moved
		s.rows[k] = sl
	}
	return n
}

// queueWhere queues the DeleteWhere statements not yet queued, one per column, and
// returns how many.
func (s *tableState[K, R]) queueWhere(b *pgx.Batch) int {
	t, n := s.t, 0
	for c := range t.cols {
		vals, ok := s.where[c]
		if !ok {
			continue
		}
		arr := reflect.MakeSlice(reflect.SliceOf(fieldType[R](t.fields[c])), 0, len(vals))
		for _, x := range vals {
			arr = reflect.Append(arr, reflect.ValueOf(x))
		}
		b.Queue(`DELETE FROM `+t.name+` WHERE `+t.cols[c]+` = ANY($1)`, arr.Interface())
		n++
	}
	s.where = nil
	return n
}

// copyMin is the fewest new rows (keys loaded as absent) a table's write sends with
// COPY rather than in its upsert. COPY writes a row for about half the upsert's
// cost, in PostgreSQL and in the client, but takes a round trip of its own (and one
// more for the statements queued before it): worth it in replay and catch-up
// batches, not in a live batch of a few events.
const copyMin = 64

// queuePuts queues on w the write of the rows with keys put, in key order: one
// upsert whatever each row was (loaded, loaded as absent, Put without a load), so
// that every transaction takes the table's row locks in one order. A key loaded as
// absent that the upsert updated instead of inserting was inserted meanwhile by
// another transaction: the batch is stale (and rolled back, with the update).
//
// When there are at least copyMin keys loaded as absent and every other row put is
// already locked by the transaction (loaded present, or written earlier), the new
// rows go by COPY first, then the others by the upsert: no row lock is taken out of
// key order (the new rows' keys lock nothing another transaction holds, unless it
// inserted the key too, and then the COPY fails on the key and the batch is
// stale, as above).
func (s *tableState[K, R]) queuePuts(w *Writer, put []K) int {
	t := s.t
	var fresh, held, at []K
	blind, byCtid := false, t.writesAt(w.schema)
	for _, k := range put {
		sl := s.rows[k]
		switch {
		case sl.absent:
			fresh = append(fresh, k)
		case sl.ctid.Valid && byCtid:
			at = append(at, k)
		default:
			held = append(held, k)
			blind = blind || !sl.held
		}
	}
	n := 0
	if len(at) > 0 {
		// Loaded, locked and not written since: updated where they are.
		ctids := make([]pgtype.TID, len(at))
		for i, k := range at {
			ctids[i] = s.rows[k].ctid
		}
		w.batch.Queue(t.updatesAt, append([]any{ctids}, s.columns(at)...)...).Exec(s.checkAt("UPDATE", len(at)))
		n++
		if len(fresh)+len(held) == 0 {
			return n
		}
	}
	if len(fresh) >= copyMin && !blind && t.copies(w.schema) && !t.lockingNewKeys() {
		rows := make([]R, len(fresh))
		for i, k := range fresh {
			rows[i] = s.rows[k].row
		}
		w.queueCopy(s.copyFunc(pgx.Identifier{w.schema, t.name}, t.fitIn(w.schema).oids, rows))
		put, fresh, n = held, nil, n+1
		if len(put) == 0 {
			return n
		}
	} else {
		put = slices.Concat(held, fresh)
		slices.Sort(put)
	}
	w.batch.Queue(t.upsert, append(s.columns(put), fresh)...).Query(func(rows pgx.Rows) error {
		rows.Close()
		key, stale := staleKey(rows.Err())
		if !stale {
			return rows.Err()
		}
		t.raced()
		return Transient(fmt.Errorf("readmodel: table %s: key %s, loaded as absent, was inserted meanwhile by another transaction: the batch is retried, and the table locks its new keys at load for %v",
			t.name, key, NewKeyLocksFor))
	})
	return n + 1
}

// checkAt returns the check of a write by ctid of want rows: each was loaded with
// FOR UPDATE, so no other transaction can have moved it, and the statement checks
// the key at the ctid too. A count short means the batch's own statements moved a
// row since its load, beside the table's bookkeeping: a foreign key's cascade from
// another table, a trigger. The table then writes by key, as the upsert did, from
// now on, and the batch is retried (transient): a row is never left unwritten, nor
// another written, nor the batch retried the same way for ever.
func (s *tableState[K, R]) checkAt(verb string, want int) func(pgconn.CommandTag) error {
	return func(ct pgconn.CommandTag) error {
		if got := ct.RowsAffected(); got != int64(want) {
			s.t.ctidOff.Store(true)
			return Transient(fmt.Errorf("readmodel: table %s: %s of %d rows loaded and locked by this batch found %d of them where they were read (moved by a cascade or a trigger?); the table writes by key from now on",
				s.t.name, verb, want, got))
		}
		return nil
	}
}

// copyFunc returns the COPY of rows into table, in their order, and what its
// failure means: a key taken (SQLSTATE 23505) is a stale batch, as in the upsert,
// or a unique constraint that the upsert's retry will name; a row COPY cannot
// write where the upsert could (a column whose type is not the field's, so that
// the binary encoding does not fit) turns COPY off for the table. Either way the
// batch is retried, without COPY.
func (s *tableState[K, R]) copyFunc(table pgx.Identifier, oids []uint32, rows []R) func(context.Context, pgx.Tx) error {
	t := s.t
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := copyRows(ctx, tx, t, table, oids, rows)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var pgErr *pgconn.PgError
		var encErr encodeError
		switch {
		case errors.As(err, &encErr):
			// Nothing was sent: COPY is off for the table, and the retry's upsert decides.
		case errors.As(err, &pgErr) && pgErr.Code == "23505":
			t.raced()
			return Transient(fmt.Errorf("readmodel: table %s: a new row's key is taken (%s): inserted meanwhile by another transaction, or another unique constraint; the batch is retried, without COPY, and the table locks its new keys at load for %v",
				t.name, pgErr.Detail, NewKeyLocksFor))
		case errors.As(err, &pgErr) && !copyRefusal(pgErr):
			return err // the write's own fault (a foreign key, a check): as the upsert's
		case pgErr == nil && IsTransient(err):
			return err
		}
		t.copyOff.Store(true)
		return Transient(fmt.Errorf("readmodel: table %s: COPY of the batch's new rows failed, the table writes them with its upsert from now on: %w", t.name, err))
	}
}

// tableFit is what queueFitCheck learnt of a table in a schema.
type tableFit struct {
	copy  bool     // each column's type fits its field: COPY writes as the upsert would
	split bool     // no foreign key from the table to itself: its rows may go in several statements
	oids  []uint32 // with copy: the columns' types, in the table's column order, which COPY encodes for
}

// queueFitCheck queues, the first time the table is loaded in schema, the check of
// what its writes may do there. COPY needs each column's type to be the one its
// field maps to (the type of the upsert's unnest array), or of its family where
// PostgreSQL's cast from that type and pgx's conversion for COPY agree (the
// integers, exact or out of range; text and varchar), so that every value lands as
// the upsert would land it. Elsewhere the two differ (pgx truncates a float64 for an
// integer column, PostgreSQL's cast rounds; a timestamptz cast to timestamp takes
// the session's zone), and the table keeps the upsert. Writing a table's rows in
// several statements (by ctid, by COPY, by the upsert) needs no foreign key from the
// table to itself: one statement's check would run before the row it needs is
// written by the next (an updated row pointing at a row new in the batch). The
// answer is kept for the process's life: a migration changing a column's type or a
// key runs before the service starts, as the projection's migrations do. It
// returns how many statements it queued.
func (t *Table[K, R]) queueFitCheck(b *pgx.Batch, schema string) int {
	if _, asked := t.fit.LoadOrStore(schema, tableFit{}); asked {
		return 0
	}
	b.Queue(`WITH c AS (
		  SELECT a.atttypid AS col, to_regtype(d.t)::oid AS field, d.n
		    FROM unnest($2::text[], $4::text[]) WITH ORDINALITY AS d(name, t, n)
		    JOIN pg_attribute a ON a.attrelid = to_regclass($1) AND a.attname = d.name AND NOT a.attisdropped)
		SELECT count(*) = $3 AND bool_and(col = field
		    OR (col IN (21, 23, 20) AND field IN (21, 23, 20))    -- int2, int4, int8
		    OR (col IN (25, 1043) AND field IN (25, 1043))),      -- text, varchar
		  to_regclass($1) IS NOT NULL AND NOT EXISTS (SELECT FROM pg_constraint
		    WHERE contype = 'f' AND conrelid = to_regclass($1) AND confrelid = conrelid),
		  array_agg(col ORDER BY n)
		  FROM c`,
		pgx.Identifier{schema, t.name}.Sanitize(), t.cols, len(t.cols), t.types).QueryRow(func(row pgx.Row) error {
		var fits, split *bool
		var oids []uint32
		if err := row.Scan(&fits, &split, &oids); err != nil {
			return err
		}
		fit := tableFit{copy: fits != nil && *fits && len(oids) == len(t.cols), split: split != nil && *split}
		if fit.copy {
			fit.oids = oids
		}
		t.fit.Store(schema, fit)
		return nil
	})
	return 1
}

// fitIn returns what queueFitCheck learnt of the table in schema: nothing for a
// writer not told its schema (rmhook.Schema), or before the check's answer.
func (t *Table[K, R]) fitIn(schema string) tableFit {
	if schema == "" {
		return tableFit{}
	}
	f, _ := t.fit.Load(schema)
	fit, _ := f.(tableFit)
	return fit
}

// writesAt reports whether the rows loaded are written back by their ctid in
// schema: the table's rows may go in several statements, and no write by ctid has
// come up short since (checkAt).
func (t *Table[K, R]) writesAt(schema string) bool {
	return t.fitIn(schema).split && !t.ctidOff.Load()
}

// copies reports whether the table's new rows in schema go by COPY: its column
// types fit, its rows may go in several statements, and no COPY was refused since.
func (t *Table[K, R]) copies(schema string) bool {
	fit := t.fitIn(schema)
	return fit.copy && fit.split && !t.copyOff.Load()
}

// copyRefusal reports whether a COPY's error is one the upsert would not meet for
// the same rows: the binary data does not fit a column (class 22, data exception:
// the column's type is not the one the field maps to), or a column or the table is
// not there as declared (class 42). A value that cannot be encoded is found before
// the COPY is sent (encodeError).
func copyRefusal(e *pgconn.PgError) bool {
	return strings.HasPrefix(e.Code, "22") || strings.HasPrefix(e.Code, "42")
}

// queueAdds queues the write of Add's deltas for keys not in memory, in key order,
// and forgets them; it returns how many statements it queued.
func (s *tableState[K, R]) queueAdds(b *pgx.Batch) int {
	if len(s.adds) == 0 {
		return 0
	}
	keys := make([]K, 0, len(s.adds))
	for k := range s.adds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b.Queue(s.t.adds, s.columnsOf(keys, func(k K) R { return s.adds[k] })...)
	clear(s.adds)
	return 1
}

// columns returns one array per column of the rows with keys, in their order.
func (s *tableState[K, R]) columns(keys []K) []any {
	return s.columnsOf(keys, func(k K) R { return s.rows[k].row })
}

// columnsOf returns one array per column of the rows row(k) of keys, in their order.
func (s *tableState[K, R]) columnsOf(keys []K, row func(K) R) []any {
	t := s.t
	arrs := make([]reflect.Value, len(t.fields))
	for i, f := range t.fields {
		arrs[i] = reflect.MakeSlice(reflect.SliceOf(fieldType[R](f)), len(keys), len(keys))
	}
	for j, k := range keys {
		r := row(k)
		v := reflect.ValueOf(&r).Elem()
		for i, f := range t.fields {
			arrs[i].Index(j).Set(v.FieldByIndex(f))
		}
	}
	out := make([]any, len(arrs))
	for i, a := range arrs {
		out[i] = a.Interface()
	}
	return out
}

func (s *tableState[K, R]) drop() {
	for k := range s.rows {
		s.want[k] = struct{}{}
	}
	clear(s.rows)
	clear(s.adds)
	s.where = nil
}

func fieldType[R any](index []int) reflect.Type {
	return reflect.TypeFor[R]().FieldByIndex(index).Type
}
