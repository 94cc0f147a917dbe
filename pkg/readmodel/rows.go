package readmodel

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"

	"github.com/jackc/pgx/v5"
)

// rowSet is one table's rows in a Writer: its identity map for the batch.
type rowSet interface {
	// queueLoad queues the query for the keys wanted and not held (after a race on
	// a new key, with the statement locking the absent ones); it returns how many
	// statements it queued.
	queueLoad(b *pgx.Batch) int
	// sync queues the writes of the rows changed since the last sync (at most a
	// DELETE per DeleteWhere column, one DELETE and one upsert), in key order, and
	// marks them written; it returns how many statements it queued.
	sync(b *pgx.Batch) int
	// drop forgets every row, changed or not; the keys are wanted again.
	drop()
}

// slot is a key's row in memory: the row when it exists, and whether it changed.
type slot[R any] struct {
	row    R
	exists bool
	dirty  bool
	absent bool // loaded as absent, and not written since: an insert, not an update
}

// tableState is a Table's identity map in one Writer.
type tableState[K cmp.Ordered, R any] struct {
	t     *Table[K, R]
	rows  map[K]slot[R]
	want  map[K]struct{} // keys to load with the next query
	where map[int][]any  // DeleteWhere values per column, not yet queued
	adds  map[K]R        // Add's deltas summed, for keys not in memory
}

func (s *tableState[K, R]) wantKey(k K) {
	if _, ok := s.rows[k]; !ok {
		s.want[k] = struct{}{}
	}
}

func (s *tableState[K, R]) queueLoad(b *pgx.Batch) int {
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
	if t.lockingNewKeys() {
		b.Queue(t.locks, keys, t.name+":")
		n++
	}
	b.Queue(t.selects, keys).Query(func(rows pgx.Rows) error {
		found := make(map[K]slot[R], len(keys))
		for rows.Next() {
			var row R
			v := reflect.ValueOf(&row).Elem()
			dest := make([]any, len(t.fields))
			for i, f := range t.fields {
				dest[i] = v.FieldByIndex(f).Addr().Interface()
			}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			found[t.key(row)] = slot[R]{row: row, exists: !s.deletedWhere(v)}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, k := range keys {
			sl, ok := found[k]
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
	})
	return n
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

func (s *tableState[K, R]) sync(b *pgx.Batch) int {
	t, n := s.t, s.queueWhere(b)
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
	if len(gone) > 0 {
		slices.Sort(gone)
		b.Queue(t.deletes, gone)
		n++
	}
	if len(put) > 0 {
		slices.Sort(put)
		n += s.queuePuts(b, put)
	}
	n += s.queueAdds(b)
	for _, k := range gone {
		s.rows[k] = slot[R]{absent: s.rows[k].absent} // a key loaded as absent stays one
	}
	for _, k := range put {
		sl := s.rows[k]
		sl.dirty, sl.absent = false, false
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

// queuePuts queues the write of the rows with keys put: one upsert, in key order,
// whatever each row was (loaded, loaded as absent, Put without a load), so that
// every transaction takes the table's row locks in one order. A key loaded as
// absent that the upsert updated instead of inserting was inserted meanwhile by
// another transaction: the batch is stale (and rolled back, with the update).
func (s *tableState[K, R]) queuePuts(b *pgx.Batch, put []K) int {
	t := s.t
	var fresh []K
	for _, k := range put {
		if s.rows[k].absent {
			fresh = append(fresh, k)
		}
	}
	b.Queue(t.upsert, append(s.columns(put), fresh)...).Query(func(rows pgx.Rows) error {
		rows.Close()
		key, stale := staleKey(rows.Err())
		if !stale {
			return rows.Err()
		}
		t.raced()
		return Transient(fmt.Errorf("readmodel: table %s: key %s, loaded as absent, was inserted meanwhile by another transaction: the batch is retried, and the table locks its new keys at load for %v",
			t.name, key, NewKeyLocksFor))
	})
	return 1
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
