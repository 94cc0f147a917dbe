package readmodel

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// A batch's COPY goes to PostgreSQL in writes that each carry a whole statement:
// the COPY, its rows (encoded beforehand) and the end of its data, at most
// copyWriteMax bytes, so that the kernel takes each write at once, before
// PostgreSQL reads it. pgx's own CopyFrom sends the statement first and then the
// rows as it encodes them, so PostgreSQL waits for them inside the statement, and a
// process stopped there (SIGSTOP, a debugger, a paused VM) leaves it waiting for as
// long as the process stays stopped, with the batch's row locks, the partition's
// position among them: neither idle_in_transaction_session_timeout (the session is
// running a statement) nor statement_timeout (PostgreSQL acts on a cancel only once
// more data arrives; both checked against PostgreSQL 15) ends that wait, and the
// member that took the partition over waits as long to claim it. Sent whole, a
// statement's data is in the server's socket before it starts: a stop lands
// between two statements, where the transaction is idle and the timeout ends it.
// That holds where the kernel takes 64 KiB at once (loopback, a Unix socket, a
// connection past its first round trips); over TLS, or a fresh connection to a
// distant server, a write may still go out in parts, and the window is only
// narrower than pgx's.

// copyWriteMax bounds one COPY statement's write: socket buffers take it whole
// (a row larger than that goes alone).
const copyWriteMax = 64 << 10

// copyRows writes rows into table (its columns cols, of types oids) with COPY
// statements, each sent in one write, and returns the rows written. tx's
// connection must be idle. An error in encoding a value is returned before
// anything is sent.
func copyRows[K cmp.Ordered, R any](ctx context.Context, tx pgx.Tx, t *Table[K, R], table pgx.Identifier, oids []uint32, rows []R) (n int64, err error) {
	conn := tx.Conn()
	if tracer, ok := conn.Config().Tracer.(pgx.CopyFromTracer); ok {
		ctx = tracer.TraceCopyFromStart(ctx, conn, pgx.TraceCopyFromStartData{TableName: table, ColumnNames: t.cols})
		defer func() {
			tag := pgconn.NewCommandTag(fmt.Sprintf("COPY %d", n))
			if err != nil {
				tag = pgconn.CommandTag{}
			}
			tracer.TraceCopyFromEnd(ctx, conn, pgx.TraceCopyFromEndData{CommandTag: tag, Err: err})
		}()
	}
	if len(oids) != len(t.cols) {
		return 0, fmt.Errorf("readmodel: table %s: COPY: %d column types for %d columns", t.name, len(oids), len(t.cols))
	}
	quoted := make([]string, len(t.cols))
	for i, c := range t.cols {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	sql := fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT binary)", table.Sanitize(), strings.Join(quoted, ", "))
	writes, err := encodeCopy(conn.TypeMap(), t, oids, sql, rows)
	if err != nil {
		return 0, encodeError{err}
	}
	defer putCopyBufs(writes) // each write is out (or the connection closed) when it returns
	for _, msgs := range writes {
		tag, err := copyInOneWrite(ctx, conn.PgConn(), msgs)
		if err != nil {
			return n, err
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

// encodeError is a value COPY's binary format could not hold: nothing was sent.
type encodeError struct{ err error }

func (e encodeError) Error() string { return "COPY: encoding a row: " + e.err.Error() }
func (e encodeError) Unwrap() error { return e.err }

// copyStatement builds the messages of one COPY statement: the statement (a
// simple query), its rows in COPY's binary format in one CopyData, and CopyDone.
type copyStatement struct {
	buf    []byte
	copyAt int // where the CopyData message starts
	rows   int
}

// copyBufs keeps COPY statements' buffers (*[]byte) for the next statements: a
// replay sends thousands, of up to copyWriteMax bytes each.
var copyBufs sync.Pool

func getCopyBuf(size int) []byte {
	if b, ok := copyBufs.Get().(*[]byte); ok && cap(*b) >= size {
		return (*b)[:0]
	}
	return make([]byte, 0, size)
}

func putCopyBufs(writes [][]byte) {
	for i := range writes {
		b := writes[i][:0]
		copyBufs.Put(&b)
	}
}

func newCopyStatement(sql string, size int) copyStatement {
	buf := getCopyBuf(size)
	buf = append(buf, 'Q', 0, 0, 0, 0)
	buf = append(buf, sql...)
	buf = append(buf, 0)
	setUint32(buf[1:], uint32(len(buf)-1))
	copyAt := len(buf)
	buf = append(buf, 'd', 0, 0, 0, 0)
	buf = append(buf, "PGCOPY\n\377\r\n\000"...)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0) // flags, header extension length
	return copyStatement{buf: buf, copyAt: copyAt}
}

// end closes the data (the trailer: -1 fields) and the statement (CopyDone).
func (c copyStatement) end() []byte {
	c.buf = append(c.buf, 0xff, 0xff)
	setUint32(c.buf[c.copyAt+1:], uint32(len(c.buf)-c.copyAt-1))
	return append(c.buf, 'c', 0, 0, 0, 4)
}

// encodeCopy returns the protocol's messages for COPY statements of rows, one
// []byte per statement and write: at most copyWriteMax bytes, or one row larger
// than that alone. Each field is encoded for its column's type. Buffers are sized
// from the bytes per row of the table's last COPY, so that they are not grown by
// doubling.
func encodeCopy[K cmp.Ordered, R any](m *pgtype.Map, t *Table[K, R], oids []uint32, sql string, rows []R) ([][]byte, error) {
	per := int(t.copyRowBytes.Load())
	if per == 0 {
		per = 2 + len(t.cols)*24
	}
	size := func(left int) int { return min(len(sql)+40+left*per*9/8, copyWriteMax+per) }
	var out [][]byte
	st := newCopyStatement(sql, size(len(rows)))
	total := 0
	for i := range rows {
		at := len(st.buf)
		v := reflect.ValueOf(&rows[i]).Elem()
		st.buf = append(st.buf, byte(len(t.cols)>>8), byte(len(t.cols)))
		for c, f := range t.fields {
			var err error
			if st.buf, err = appendCopyField(m, st.buf, oids[c], v.FieldByIndex(f).Interface()); err != nil {
				return nil, fmt.Errorf("column %s: %w", t.cols[c], err)
			}
		}
		total += len(st.buf) - at
		if st.rows > 0 && len(st.buf)+7 > copyWriteMax {
			// The row does not fit: the statement ends before it, and it starts the next.
			row := append([]byte(nil), st.buf[at:]...)
			st.buf = st.buf[:at]
			out = append(out, st.end())
			st = newCopyStatement(sql, max(size(len(rows)-i), len(sql)+40+len(row)))
			st.buf = append(st.buf, row...)
		}
		st.rows++
	}
	if st.rows > 0 {
		out = append(out, st.end())
	}
	if len(rows) > 0 {
		t.copyRowBytes.Store(int64(total / len(rows)))
	}
	return out, nil
}

// appendCopyField appends v, encoded in binary for the column type oid, with its
// length (-1: NULL). A value with no binary encoding for the type (a string for a
// uuid, numeric or date column) is read as the type's text form, then encoded, as
// pgx's own CopyFrom does.
func appendCopyField(m *pgtype.Map, buf []byte, oid uint32, v any) ([]byte, error) {
	at := len(buf)
	buf = append(buf, 0xff, 0xff, 0xff, 0xff)
	enc, err := m.Encode(oid, pgtype.BinaryFormatCode, v, buf)
	if err != nil {
		s, ok := v.(string)
		if !ok {
			text, terr := m.Encode(oid, pgtype.TextFormatCode, v, nil)
			if terr != nil {
				return nil, err
			}
			s = string(text)
		}
		var parsed any
		if serr := m.Scan(oid, pgtype.TextFormatCode, []byte(s), &parsed); serr != nil {
			return nil, err
		}
		if enc, err = m.Encode(oid, pgtype.BinaryFormatCode, parsed, buf); err != nil {
			return nil, err
		}
	}
	if enc == nil {
		return buf, nil // NULL: the -1 stays
	}
	setUint32(enc[at:], uint32(len(enc)-at-4))
	return enc, nil
}

func setUint32(b []byte, n uint32) {
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// copyInOneWrite sends msgs (a COPY … FROM STDIN, its data and the end of the data,
// encoded) in one write on conn, idle, and reads the answer up to ReadyForQuery.
// PostgreSQL reads the data from its socket once the statement starts; an error
// before or during the COPY makes it ignore the rest, as the protocol says, and
// answer with the error. ctx bounds the write too: a write the server does not
// read (a statement larger than the socket buffers, the server waiting on a lock)
// fails when ctx ends.
func copyInOneWrite(ctx context.Context, conn *pgconn.PgConn, msgs []byte) (pgconn.CommandTag, error) {
	if err := ctx.Err(); err != nil {
		return pgconn.CommandTag{}, err
	}
	nc := conn.Conn()
	stop := context.AfterFunc(ctx, func() { _ = nc.SetWriteDeadline(time.Now()) })
	err := conn.Frontend().SendUnbufferedEncodedCopyData(msgs)
	if !stop() || err != nil {
		// Part of the messages may be out: the connection cannot be trusted.
		closeConn(ctx, conn)
		return pgconn.CommandTag{}, fmt.Errorf("COPY: write: %w", cmp.Or(err, ctx.Err()))
	}
	var tag pgconn.CommandTag
	var pgErr error
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			// The answer was not read to its end (ctx ended, or the connection
			// broke): the connection's next reader would get the rest. pgconn
			// closes its own in that case; this one must too.
			closeConn(ctx, conn)
			return pgconn.CommandTag{}, fmt.Errorf("COPY: reading the answer: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			tag = pgconn.NewCommandTag(string(m.CommandTag))
		case *pgproto3.ErrorResponse:
			pgErr = pgconn.ErrorResponseToPgError(m)
		case *pgproto3.ReadyForQuery:
			return tag, pgErr
		}
	}
}

// closeConn closes conn, waiting at most 15 s for the server to hear it, as pgconn
// does for its own.
func closeConn(ctx context.Context, conn *pgconn.PgConn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}
