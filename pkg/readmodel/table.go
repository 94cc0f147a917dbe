package readmodel

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/projector/projector/pkg/events"
)

// Table is a read-model table whose rows handlers read and write in memory, by
// primary key: the fast path. Loading a key locks its row until the batch commits
// (FOR UPDATE, in key order), so that partitions sharing rows take turns on them,
// never deadlock among themselves and never lose each other's updates. Declare a
// table once, beside the projection's migrations:
//
//	users := readmodel.NewTable[string, User](p, "users", "user_id")
//
// R is a struct whose fields tagged `db:"column"` are the table's columns; K is the
// Go type of the primary key's field. Within a partition batch each row is loaded at
// most once (the keys declared with Loads in one query per table before the
// handlers run), changed in memory by Get, Put, Update and Delete, and written once
// at commit: per table one DELETE, one upsert of the rows that existed and one
// insert of the new ones, each in primary-key order, in the batch's transaction.
// Every transaction that writes the same rows locks them in the same order, so
// partitions sharing rows cannot deadlock on them.
//
// A key loaded as absent has no row to lock. Its insert at commit skips a row that
// another transaction inserted meanwhile; then the batch is stale, fails with a
// transient error, and the runtime retries it. After such a race the table locks
// its new keys too, for a while (see NewKeyLocksFor): an advisory lock per absent
// key, in key order, before the read, so that the next batches wanting the same new
// key wait for each other instead of racing. Those locks take slots of PostgreSQL's
// shared lock table (max_locks_per_transaction × max_connections, shared with every
// other client of the server), which is why they are not taken always: a replay
// creating a thousand rows per batch in twelve partitions would fill it.
//
// A Table's methods are called only from handlers, with the handler's Writer.
type Table[K cmp.Ordered, R any] struct {
	order   int    // declaration order in its projection: tables are written in it
	name    string // unqualified: it resolves in the projection's schema
	cols    []string
	fields  [][]int // each column's struct field index
	types   []string
	pk      int // the primary key's column
	selects string
	locks   string // the advisory locks of the keys not yet in the table
	upsert  string // rows that existed when loaded, or were Put without a load
	inserts string // rows loaded as absent: RETURNING the keys inserted
	adds    string // Add's deltas: the numeric columns summed on conflict
	deletes string
	sums    []int // the numeric columns Add sums: every non-key int, uint or float field

	lockNewKeysUntil atomic.Int64 // unix nanoseconds; see NewKeyLocksFor
}

// NewKeyLocksFor is how long a table locks the keys it loads as absent after a
// batch found one of its new keys inserted by another transaction meanwhile. Each
// race starts the period again.
const NewKeyLocksFor = 5 * time.Minute

// lockingNewKeys reports whether loads lock the keys not yet in the table.
func (t *Table[K, R]) lockingNewKeys() bool { return time.Now().UnixNano() < t.lockNewKeysUntil.Load() }

// raced records a race on a new key: loads lock new keys from now on, for a while.
func (t *Table[K, R]) raced() { t.lockNewKeysUntil.Store(time.Now().Add(NewKeyLocksFor).UnixNano()) }

// NewTable declares the table name of p, keyed by the column primaryKey. It panics
// when R is not a struct with `db` tags, or the primary key's field is not of type
// K: programming errors found at start. A field's PostgreSQL type comes from its Go
// type (string text, int and int64 bigint, bool boolean, float64 double precision,
// time.Time timestamptz, []byte bytea; a pointer is nullable); a `pgtype:"uuid"` tag
// names another.
func NewTable[K cmp.Ordered, R any](p *Projection, name, primaryKey string) *Table[K, R] {
	rt := reflect.TypeFor[R]()
	if rt.Kind() != reflect.Struct {
		panic(fmt.Sprintf("readmodel: table %s: row type %v is not a struct", name, rt))
	}
	t := &Table[K, R]{order: len(p.tables), name: name, pk: -1}
	for _, f := range reflect.VisibleFields(rt) {
		col, _, _ := strings.Cut(f.Tag.Get("db"), ",")
		if col == "" || col == "-" || !f.IsExported() {
			continue
		}
		typ := f.Tag.Get("pgtype")
		if typ == "" {
			typ = pgTypeOf(f.Type)
		}
		if typ == "" {
			panic(fmt.Sprintf("readmodel: table %s: column %s: no PostgreSQL type for Go type %v: tag the field pgtype:\"…\"", name, col, f.Type))
		}
		if col == primaryKey {
			if f.Type != reflect.TypeFor[K]() {
				panic(fmt.Sprintf("readmodel: table %s: primary key %s is a %v, the table's key type is %v", name, col, f.Type, reflect.TypeFor[K]()))
			}
			t.pk = len(t.cols)
		}
		if col != primaryKey && isNumber(f.Type) {
			t.sums = append(t.sums, len(t.cols))
		}
		t.cols, t.fields, t.types = append(t.cols, col), append(t.fields, f.Index), append(t.types, typ)
	}
	if t.pk < 0 {
		panic(fmt.Sprintf("readmodel: table %s: no field of %v is tagged db:%q", name, rt, primaryKey))
	}
	t.prepareSQL()
	p.tables = append(p.tables, name)
	return t
}

// isNumber reports whether a field of type t is a number Add sums.
func isNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// pgTypeOf maps a Go type to the PostgreSQL type of an unnest array's elements.
func pgTypeOf(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return "timestamptz"
	case t == reflect.TypeFor[[]byte]():
		return "bytea"
	}
	switch t.Kind() {
	case reflect.String:
		return "text"
	case reflect.Int, reflect.Int64, reflect.Uint32:
		return "bigint"
	case reflect.Int32, reflect.Uint16:
		return "integer"
	case reflect.Int16, reflect.Int8, reflect.Uint8:
		return "smallint"
	case reflect.Bool:
		return "boolean"
	case reflect.Float64:
		return "double precision"
	case reflect.Float32:
		return "real"
	}
	return ""
}

// prepareSQL builds the table's statements: the load and its locks, the delete, the
// upsert and the insert (an unnest of one array per column, in the order given,
// which is key order).
func (t *Table[K, R]) prepareSQL() {
	cols := strings.Join(t.cols, ", ")
	pk := t.cols[t.pk]
	t.selects = fmt.Sprintf(`SELECT %s FROM %s WHERE %s = ANY($1) ORDER BY %s FOR UPDATE`, cols, t.name, pk, pk)
	// After a race (see Table), the keys not in the table are locked before the
	// read, in key order: a transaction-level advisory lock on a hash of the table
	// and the key. The read, a statement of its own, then sees what a transaction
	// that held the lock committed before releasing it. The rows that exist are
	// locked by the read itself, so they take no slot of the shared lock table.
	t.locks = fmt.Sprintf(`SELECT count(pg_advisory_xact_lock(hashtextextended($2 || k::text, 0)))
		FROM (SELECT u.k FROM unnest($1::%s[]) WITH ORDINALITY AS u(k, i)
		      WHERE NOT EXISTS (SELECT FROM %s WHERE %s = u.k) ORDER BY u.i) AS n`, t.types[t.pk], t.name, pk)
	t.deletes = fmt.Sprintf(`DELETE FROM %s WHERE %s = ANY($1)`, t.name, pk)
	params := make([]string, len(t.cols))
	var set []string
	for i, c := range t.cols {
		params[i] = fmt.Sprintf("$%d::%s[]", i+1, t.types[i])
		if i != t.pk {
			set = append(set, c+" = EXCLUDED."+c)
		}
	}
	if len(set) == 0 {
		set = []string{pk + " = EXCLUDED." + pk}
	}
	rows := fmt.Sprintf(`INSERT INTO %s (%s) SELECT * FROM unnest(%s) ON CONFLICT (%s)`, t.name, cols, strings.Join(params, ", "), pk)
	t.upsert = rows + " DO UPDATE SET " + strings.Join(set, ", ")
	// A key loaded as absent that another transaction inserted meanwhile is not
	// overwritten: DO NOTHING neither waits for that row's lock nor writes, and the
	// key missing from RETURNING makes the batch stale.
	t.inserts = rows + " DO NOTHING RETURNING " + pk
	sums := make([]string, len(t.sums))
	for i, c := range t.sums {
		sums[i] = fmt.Sprintf("%s = %s.%s + EXCLUDED.%s", t.cols[c], t.name, t.cols[c], t.cols[c])
	}
	if len(sums) > 0 {
		t.adds = rows + " DO UPDATE SET " + strings.Join(sums, ", ")
	}
}

// Name returns the table's name.
func (t *Table[K, R]) Name() string { return t.name }

// Get returns the row with key and whether it exists, as the batch left it so far.
// A key not yet in memory is loaded, with every other key the batch is known to
// need: declare the keys with Loads so that the runtime loads them all beforehand.
func (t *Table[K, R]) Get(ctx context.Context, w *Writer, key K) (R, bool, error) {
	s := t.state(w)
	if sl, ok := s.rows[key]; ok {
		return sl.row, sl.exists, nil
	}
	s.want[key] = struct{}{}
	if err := w.load(ctx); err != nil {
		var zero R
		return zero, false, err
	}
	sl := s.rows[key]
	return sl.row, sl.exists, nil
}

// Put writes row, replacing any row with its key, without reading it first.
func (t *Table[K, R]) Put(w *Writer, row R) {
	s, k := t.state(w), t.key(row)
	delete(s.adds, k)
	s.rows[k] = slot[R]{row: row, exists: true, dirty: true, absent: s.rows[k].absent}
}

// Add adds the numbers of delta (its int, uint and float fields other than the
// key) to the row with delta's key, without reading it; a row that does not exist
// is inserted as delta. For totals and counts that many partitions change:
//
//	customers.Add(w, Customer{ID: v.CustomerID, Orders: 1, TotalCents: v.AmountCents})
//
// A row in memory (read with Get in this batch) is changed in memory. Otherwise
// the deltas are summed in memory and written at commit, per table in one
// statement, in key order (INSERT … ON CONFLICT DO UPDATE SET n = n + EXCLUDED.n):
// the rows are locked from that write to the commit, not from the batch's start,
// so partitions adding to the same rows hardly wait for each other. Reading a row
// after adding to it (Get, Update) loads it and applies the deltas. The columns
// that are not numbers are written only when the row is inserted. Add panics when
// the table has no number to add to.
func (t *Table[K, R]) Add(w *Writer, delta R) {
	if len(t.sums) == 0 {
		panic(fmt.Sprintf("readmodel: table %s: Add: the row type %v has no number field besides the key", t.name, reflect.TypeFor[R]()))
	}
	s, k := t.state(w), t.key(delta)
	if sl, ok := s.rows[k]; ok {
		if sl.exists {
			t.sum(&sl.row, delta)
		} else {
			sl.row, sl.exists = delta, true
		}
		sl.dirty = true
		s.rows[k] = sl
		return
	}
	if prev, ok := s.adds[k]; ok {
		t.sum(&prev, delta)
		delta = prev
	}
	if s.adds == nil {
		s.adds = map[K]R{}
	}
	s.adds[k] = delta
}

// sum adds delta's numbers to row's.
func (t *Table[K, R]) sum(row *R, delta R) {
	rv, dv := reflect.ValueOf(row).Elem(), reflect.ValueOf(delta)
	for _, c := range t.sums {
		f, d := rv.FieldByIndex(t.fields[c]), dv.FieldByIndex(t.fields[c])
		switch {
		case f.CanInt():
			f.SetInt(f.Int() + d.Int())
		case f.CanUint():
			f.SetUint(f.Uint() + d.Uint())
		default:
			f.SetFloat(f.Float() + d.Float())
		}
	}
}

// Update changes the row with key by fn, when it exists, and reports whether it did.
func (t *Table[K, R]) Update(ctx context.Context, w *Writer, key K, fn func(*R)) (bool, error) {
	row, ok, err := t.Get(ctx, w, key)
	if err != nil || !ok {
		return false, err
	}
	fn(&row)
	if t.key(row) != key {
		return false, fmt.Errorf("readmodel: table %s: Update changed the primary key %v to %v", t.name, key, t.key(row))
	}
	t.Put(w, row)
	return true, nil
}

// Delete deletes the row with key, whether or not it exists.
func (t *Table[K, R]) Delete(w *Writer, key K) {
	var zero R
	s := t.state(w)
	delete(s.adds, key)
	s.rows[key] = slot[R]{row: zero, dirty: true}
}

// DeleteWhere deletes every row whose column equals value, the rows in memory at
// once and the others at commit (one DELETE … WHERE column = ANY($1) per column,
// before the table's other writes): for a cascade by a column other than the key.
// Rows put afterwards in the batch are kept. It panics on a column the table does
// not have.
func (t *Table[K, R]) DeleteWhere(w *Writer, column string, value any) {
	c := t.column(column)
	if ft := fieldType[R](t.fields[c]); reflect.TypeOf(value) != ft {
		panic(fmt.Sprintf("readmodel: table %s: DeleteWhere %s with a %T, the column's field is a %v", t.name, column, value, ft))
	}
	s := t.state(w)
	if len(s.adds) > 0 { // added before: written before the DELETE, which may take them
		n := s.queueAdds(w.batch)
		w.n += n
		w.total += n
	}
	for k, sl := range s.rows {
		if sl.exists && reflect.ValueOf(sl.row).FieldByIndex(t.fields[c]).Interface() == value {
			var zero R
			s.rows[k] = slot[R]{row: zero, dirty: true}
		}
	}
	if s.where == nil {
		s.where = map[int][]any{}
	}
	s.where[c] = append(s.where[c], value)
}

func (t *Table[K, R]) column(name string) int {
	for i, c := range t.cols {
		if c == name {
			return i
		}
	}
	panic(fmt.Sprintf("readmodel: table %s has no column %s", t.name, name))
}

func (t *Table[K, R]) key(row R) K {
	return reflect.ValueOf(row).FieldByIndex(t.fields[t.pk]).Interface().(K)
}

// state returns the table's rows in w, made on first use.
func (t *Table[K, R]) state(w *Writer) *tableState[K, R] {
	if s, ok := w.tables[t]; ok {
		return s.(*tableState[K, R])
	}
	s := &tableState[K, R]{t: t, rows: map[K]slot[R]{}, want: map[K]struct{}{}}
	w.addTable(t, t.order, s)
	return s
}

// Loads declares that a handler of T touches the row of t keyed by key(v): the
// runtime loads every such key of a partition batch in one query per table before
// the batch's handlers run. Pass it to Handle.
func Loads[T any, K cmp.Ordered, R any](t *Table[K, R], key func(v T) K) Load[T] {
	return Load[T]{want: func(w *Writer, v T) { t.state(w).wantKey(key(v)) }}
}

// Load is a key a handler of T declares it touches: see Loads.
type Load[T any] struct{ want func(w *Writer, v T) }

// Preload loads the rows the handlers of ds declared with Loads and that w does not
// hold yet: one query per table, in one round trip (with the statements queued).
// The runtime calls it once per partition batch, before the handlers.
func (p *Projection) Preload(ctx context.Context, w *Writer, ds []events.Decoded) error {
	for _, d := range ds {
		if want := p.loads[d.Type]; want != nil {
			want(w, d)
		}
	}
	return w.load(ctx)
}
