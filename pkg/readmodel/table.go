package readmodel

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/projector/projector/pkg/events"
)

// Table is a read-model table whose rows handlers read and write in memory, by
// primary key: the fast path. Loading a key locks its row until the batch commits
// (FOR UPDATE, in key order), so that partitions sharing rows take turns on them
// and never lose each other's updates. Declare a table once, beside the
// projection's migrations:
//
//	users := readmodel.NewTable[string, User](p, "users", "user_id")
//
// R is a struct whose fields tagged `db:"column"` are the table's columns; K is the
// Go type of the primary key's field. Within a partition batch each row is loaded at
// most once (the keys declared with Loads in one query per table before the
// handlers run), changed in memory by Get, Put, Update and Delete, and written once
// at commit, per table in primary-key order, in the batch's transaction: by one
// DELETE and one upsert, and Add's sums by one statement. In the runtime's batches
// (the writer told its schema), a table without a foreign key to itself splits
// that: the rows loaded go back by their ctid (an UPDATE and a DELETE: a row loaded
// is locked, so it has not moved, and its key is not looked up again), a batch's
// new rows (keys loaded as absent, at least 64) by COPY where the table's column
// types are its fields', and the rest by the upsert (see queueFitCheck). A write by
// ctid that comes up short (a cascade or a trigger moved the row) makes the table
// write by key from then on. Every transaction that
// loads and writes the same rows locks them in the same order, so partitions
// sharing rows wait for each other instead of deadlocking.
//
// A key loaded as absent has no row to lock. If another transaction inserts it
// meanwhile, the upsert finds it there at commit: the batch is stale, fails with a
// transient error (its write rolled back), and the runtime retries it. After such a
// race the table, in this process, locks its absent keys too, for a while (see
// NewKeyLocksFor): advisory locks before the read, on at most 64 buckets of the
// keys' hashes, so that the next batches wanting the same new key wait for each
// other instead of racing. They are not taken always because such locks take slots
// of PostgreSQL's shared lock table (max_locks_per_transaction × max_connections,
// shared with every client of the server): one per key, a replay creating a
// thousand rows per batch in twelve partitions would fill it. A key read as absent
// and not written is not protected: another transaction may insert it meanwhile.
//
// A Table's methods are called only from handlers, with the handler's Writer.
type Table[K cmp.Ordered, R any] struct {
	order    int    // declaration order in its projection: tables are written in it
	name     string // unqualified: it resolves in the projection's schema
	cols     []string
	fields   [][]int // each column's struct field index
	types    []string
	pk       int     // the primary key's column
	pkAt     uintptr // the primary key's offset in R, when no embedded pointer is on its way (pkDirect)
	pkDirect bool
	selects  string
	locks    string // the advisory locks of the keys not yet in the table
	upsert   string // every row Put: RETURNING the keys loaded as absent that were not inserted
	adds     string // Add's deltas: the numeric columns summed on conflict
	deletes  string
	sums     []int // the columns Add sums: tagged db:"name,sum"

	updatesAt, deletesAt string // the rows loaded and locked, by ctid

	lockNewKeysUntil atomic.Int64 // unix nanoseconds; see NewKeyLocksFor
	copyOff          atomic.Bool  // a COPY of new rows failed on what the upsert takes (a column's type): upsert only
	copyRowBytes     atomic.Int64 // bytes per row of the last COPY, to size the next one's buffer
	fit              sync.Map     // schema → tableFit: see queueFitCheck
	qualified        sync.Map     // schema → [2]string: the load and its locks naming the table in it (loadsIn)
	ctidOff          atomic.Bool  // a write by ctid came up short (a cascade, a trigger): by key only
}

// NewKeyLocksFor is how long a table locks the keys it loads as absent after a
// batch found one of its new keys inserted by another transaction meanwhile. Each
// race starts the period again.
const NewKeyLocksFor = 5 * time.Minute

// newKeyLockBuckets is how many advisory locks a table's load takes at most for its
// absent keys after a race: the keys' hashes share that many buckets, so a batch of
// a thousand new keys takes 64 slots of the shared lock table, not a thousand, and
// batches whose new keys share a bucket take turns.
const newKeyLockBuckets = 64

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
		col, opt, _ := strings.Cut(f.Tag.Get("db"), ",")
		if col == "" || col == "-" || !f.IsExported() {
			continue
		}
		if opt != "" && opt != "sum" {
			panic(fmt.Sprintf("readmodel: table %s: column %s: unknown option %q in its db tag (the one option is sum)", name, col, opt))
		}
		if opt == "sum" && (col == primaryKey || !isNumber(f.Type)) {
			panic(fmt.Sprintf("readmodel: table %s: column %s is tagged sum but is the key or its field (%v) is not an int, uint32 or smaller, or float", name, col, f.Type))
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
			t.pkAt, t.pkDirect = fieldOffset(rt, f.Index)
		}
		if opt == "sum" {
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

// loadStatements returns the table's load and its locks, naming the table name.
func (t *Table[K, R]) loadStatements(name string) (selects, locks string) {
	cols, pk := strings.Join(t.cols, ", "), t.cols[t.pk]
	selects = fmt.Sprintf(`SELECT ctid, %s FROM %s WHERE %s = ANY($1) ORDER BY %s FOR UPDATE`, cols, name, pk, pk)
	// After a race (see Table), the keys not in the table are locked before the
	// read: a transaction-level advisory lock on the table and a bucket of the
	// key's hash (one of newKeyLockBuckets), in bucket order. The read, a statement of its own, then sees what a transaction
	// that held the lock committed before releasing it. The rows that exist are
	// locked by the read itself, so they take no slot of the shared lock table.
	locks = fmt.Sprintf(`SELECT count(pg_advisory_xact_lock(hashtext($2), n.b))
		FROM (SELECT DISTINCT (hashtextextended(u.k::text, 0) & %d)::int AS b FROM unnest($1::%s[]) AS u(k)
		      WHERE NOT EXISTS (SELECT FROM %s WHERE %s = u.k) ORDER BY b) AS n`, newKeyLockBuckets-1, t.types[t.pk], name, pk)
	return selects, locks
}

// loadsIn returns the table's load and its locks with the table named in schema,
// as the writer's schema (rmhook.Schema) says; with none, unqualified.
//
// The runtime sends a batch's loads in the round trip that begins its transaction,
// after the BEGIN and the SET LOCAL search_path in it. pgx prepares the statements
// of a batch it has not seen on the connection before running any of them, so an
// unqualified name would be looked for in the connection's search path, not the
// projection's schema: qualified, a load names its table whichever runs first.
func (t *Table[K, R]) loadsIn(schema string) (selects, locks string) {
	if schema == "" {
		return t.selects, t.locks
	}
	if q, ok := t.qualified.Load(schema); ok {
		l := q.([2]string)
		return l[0], l[1]
	}
	selects, locks = t.loadStatements(pgx.Identifier{schema}.Sanitize() + "." + t.name)
	t.qualified.Store(schema, [2]string{selects, locks})
	return selects, locks
}

// prepareSQL builds the table's statements: the load and its locks, the delete, the
// upsert and the insert (an unnest of one array per column, in the order given,
// which is key order).
func (t *Table[K, R]) prepareSQL() {
	cols := strings.Join(t.cols, ", ")
	pk := t.cols[t.pk]
	// The row's ctid comes with it: a row loaded is locked until the transaction
	// ends, so its version stays where it is, and the batch writes it back there
	// (updates, deletes) without looking its key up in the index again.
	t.selects, t.locks = t.loadStatements(t.name)
	t.deletes = fmt.Sprintf(`DELETE FROM %s WHERE %s = ANY($1)`, t.name, pk)
	// By ctid, with the key checked too. The arrays go to unnest through scalar
	// subqueries, so that the planner does not see their length: seen, for a few
	// hundred rows it would scan the whole table and hash it rather than fetch each
	// row where it is. The key is compared with IS NOT DISTINCT FROM, which no index
	// serves, so that the ctid is the one way in.
	t.deletesAt = fmt.Sprintf(`DELETE FROM %s AS t USING unnest((SELECT $1::tid[]), (SELECT $2::%s[])) AS d(c, k) WHERE t.ctid = d.c AND t.%s IS NOT DISTINCT FROM d.k`,
		t.name, t.types[t.pk], pk)
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
	// The rows loaded, changed, and not written since, by their ctid (see selects).
	vcols, vset := []string{"projector_ctid"}, []string{}
	vparams := []string{"(SELECT $1::tid[])"}
	for i, c := range t.cols {
		vcols = append(vcols, c)
		vparams = append(vparams, fmt.Sprintf("(SELECT $%d::%s[])", i+2, t.types[i]))
		if i != t.pk {
			vset = append(vset, c+" = v."+c)
		}
	}
	if len(vset) == 0 {
		vset = []string{pk + " = v." + pk}
	}
	t.updatesAt = fmt.Sprintf(`UPDATE %s AS t SET %s FROM unnest(%s) AS v(%s) WHERE t.ctid = v.projector_ctid AND t.%s IS NOT DISTINCT FROM v.%s`,
		t.name, strings.Join(vset, ", "), strings.Join(vparams, ", "), strings.Join(vcols, ", "), pk, pk)
	rows := fmt.Sprintf(`INSERT INTO %s (%s) SELECT * FROM unnest(%s) ON CONFLICT (%s)`, t.name, cols, strings.Join(params, ", "), pk)
	// The keys loaded as absent ($n+1) must be inserted: one that was updated
	// instead was inserted by another transaction since, and the batch is stale.
	// An updated row's new version carries the lock its update took (xmax). The
	// statement itself fails then, so that the transaction cannot commit even when
	// its COMMIT is sent in the same round trip: PostgreSQL has no RAISE in plain
	// SQL, so a cast of the message to int fails, naming the key (SQLSTATE 22P02,
	// with staleMarker in the message; see staleError). The cast depends on the
	// row, so it runs only for a stale key, never at planning.
	t.upsert = fmt.Sprintf(`WITH w AS (%s DO UPDATE SET %s RETURNING %s, xmax = 0 AS inserted)
		SELECT ('%s ' || %s)::int FROM w WHERE NOT inserted AND %s = ANY($%d)`,
		rows, strings.Join(set, ", "), pk, staleMarker, pk, pk, len(t.cols)+1)
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
	prev := s.rows[k]
	s.rows[k] = slot[R]{row: row, exists: true, dirty: true, absent: prev.absent, held: prev.held, ctid: prev.ctid}
}

// Add adds delta's sums (its fields tagged db:"column,sum") to the row with delta's
// key, without reading it; a row that does not exist is inserted as delta. For
// totals and counts that many partitions change:
//
//	type Customer struct {
//		ID         string `db:"customer_id"`
//		Orders     int64  `db:"orders,sum"`
//		TotalCents int64  `db:"total_cents,sum"`
//	}
//	customers.Add(w, Customer{ID: v.CustomerID, Orders: 1, TotalCents: v.AmountCents})
//
// A row in memory (read with Get in this batch) is changed in memory. Otherwise
// the deltas are summed in memory and written at commit, per table in one
// statement, in key order (INSERT … ON CONFLICT DO UPDATE SET n = n + EXCLUDED.n):
// the rows are locked from that write to the commit, not from the batch's start,
// so partitions adding to the same rows hardly wait for each other. Reading a row
// after adding to it (Get, Update) loads it and applies the deltas. The columns
// that are not sums are written only when the row is inserted. Add panics when
// the table has no sum column.
//
// Use Add on rows that batches only add to. Rows that one partition adds to while
// another reads them (Get, Loads) or puts them are locked at different points of
// the two batches (at the write, at the load), so the two can deadlock; PostgreSQL
// then fails one, which the runtime splits and retries, and counts.
func (t *Table[K, R]) Add(w *Writer, delta R) {
	if len(t.sums) == 0 {
		panic(fmt.Sprintf("readmodel: table %s: Add: no field of the row type %v is tagged db:\"column,sum\"", t.name, reflect.TypeFor[R]()))
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
	prev := s.rows[key]
	s.rows[key] = slot[R]{row: zero, dirty: true, absent: prev.absent, held: prev.held, ctid: prev.ctid}
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
	if len(s.adds) > 0 {
		// Added to since the last DeleteWhere: the earlier DeleteWhere statements,
		// then the adds, are queued now, so that this one's DELETE (at the flush) may
		// take the added rows and the earlier ones may not.
		n := s.queueWhere(w.batch) + s.queueAdds(w.batch)
		w.n += n
		w.total += n
	}
	// Each row in memory is copied into one variable whose column is compared in
	// place: boxing every row into an interface to read its field allocated a row's
	// worth per row and per call (6% of a replay's CPU in the example, whose
	// UserDeleted cascades this way).
	var row R
	var field reflect.Value // invalid for a field promoted through an embedded struct (maybe a pointer): read row by row
	if len(t.fields[c]) == 1 {
		field = reflect.ValueOf(&row).Elem().Field(t.fields[c][0])
	}
	want := reflect.ValueOf(value)
	for k, sl := range s.rows {
		if sl.ctid.Valid {
			// The DELETE goes by the stored rows' values, which the batch may have
			// changed in memory: whatever it takes is no longer where it was read.
			sl.ctid = pgtype.TID{}
			s.rows[k] = sl
		}
		if !sl.exists {
			continue
		}
		row = sl.row
		f := field
		if !f.IsValid() {
			f = reflect.ValueOf(&row).Elem().FieldByIndex(t.fields[c])
		}
		if f.Equal(want) {
			var zero R
			s.rows[k] = slot[R]{row: zero, dirty: true, absent: sl.absent, held: sl.held}
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

// key returns row's primary key: read at its offset, without reflection's boxing
// of the row (an allocation per call, on every Put and Update).
func (t *Table[K, R]) key(row R) K {
	if t.pkDirect {
		return *(*K)(unsafe.Add(unsafe.Pointer(&row), t.pkAt))
	}
	return reflect.ValueOf(row).FieldByIndex(t.fields[t.pk]).Interface().(K)
}

// fieldOffset returns the offset in rt of the field at index (a path through
// embedded structs), and false when the path goes through an embedded pointer.
func fieldOffset(rt reflect.Type, index []int) (uintptr, bool) {
	var at uintptr
	for i, x := range index {
		if i > 0 && rt.Kind() != reflect.Struct {
			return 0, false
		}
		f := rt.Field(x)
		at += f.Offset
		rt = f.Type
	}
	return at, true
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
