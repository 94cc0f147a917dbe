package readmodel

import (
	"cmp"
	"context"
	"fmt"
	"reflect"
	"strings"

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

// copyWriteMax bounds one COPY statement's write: socket buffers take it whole
// (a row larger than that goes alone).
const copyWriteMax = 64 << 10

// copyRows writes rows into table (its columns cols, of types oids) with COPY
// statements, each sent in one write, and returns the rows written. tx's
// connection must be idle. An error in encoding a value is returned before
// anything is sent.
func copyRows[K cmp.Ordered, R any](ctx context.Context, tx pgx.Tx, t *Table[K, R], table pgx.Identifier, oids []uint32, rows []R) (int64, error) {
	conn := tx.Conn()
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
	tracer, _ := conn.Config().Tracer.(pgx.CopyFromTracer)
	if tracer != nil {
		ctx = tracer.TraceCopyFromStart(ctx, conn, pgx.TraceCopyFromStartData{TableName: table, ColumnNames: t.cols})
	}
	var n int64
	for _, msgs := range writes {
		var tag pgconn.CommandTag
		if tag, err = copyInOneWrite(ctx, conn.PgConn(), msgs); err != nil {
			break
		}
		n += tag.RowsAffected()
	}
	if tracer != nil {
		tracer.TraceCopyFromEnd(ctx, conn, pgx.TraceCopyFromEndData{CommandTag: pgconn.NewCommandTag(fmt.Sprintf("COPY %d", n)), Err: err})
	}
	return n, err
}

// encodeError is a value COPY's binary format could not hold: nothing was sent.
type encodeError struct{ err error }

func (e encodeError) Error() string { return "COPY: encoding a row: " + e.err.Error() }
func (e encodeError) Unwrap() error { return e.err }

// encodeCopy returns the protocol's messages for COPY statements of rows, one
// []byte per write of at most about copyWriteMax bytes: the statement sql (a simple
// query), its rows in COPY's binary format in one CopyData, each field encoded for
// its column's type, and CopyDone. Buffers are sized from the bytes per row of the
// table's last COPY, so that they are not grown by doubling.
func encodeCopy[K cmp.Ordered, R any](m *pgtype.Map, t *Table[K, R], oids []uint32, sql string, rows []R) ([][]byte, error) {
	per := int(t.copyRowBytes.Load())
	if per == 0 {
		per = 2 + len(t.cols)*24
	}
	head := 5 + len(sql) + 1 + 5 + 19
	var out [][]byte
	var buf []byte
	copyAt, total := 0, 0
	for i := range rows {
		if buf == nil {
			buf = make([]byte, 0, min(head+(len(rows)-i)*per*9/8, copyWriteMax+per)+7)
			buf = append(buf, 'Q', 0, 0, 0, 0)
			buf = append(buf, sql...)
			buf = append(buf, 0)
			setUint32(buf[1:], uint32(len(buf)-1))
			copyAt = len(buf)
			buf = append(buf, 'd', 0, 0, 0, 0)
			buf = append(buf, "PGCOPY\n\377\r\n\000"...)
			buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0) // flags, header extension length
		}
		at0 := len(buf)
		v := reflect.ValueOf(&rows[i]).Elem()
		buf = append(buf, byte(len(t.cols)>>8), byte(len(t.cols)))
		for c, f := range t.fields {
			at := len(buf)
			buf = append(buf, 0xff, 0xff, 0xff, 0xff) // -1: NULL, unless a value follows
			enc, err := m.Encode(oids[c], pgtype.BinaryFormatCode, v.FieldByIndex(f).Interface(), buf)
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", t.cols[c], err)
			}
			if enc != nil {
				buf = enc
				setUint32(buf[at:], uint32(len(buf)-at-4))
			}
		}
		total += len(buf) - at0
		if i == len(rows)-1 || len(buf)+total/(i+1) > copyWriteMax {
			buf = append(buf, 0xff, 0xff) // the trailer: -1 fields
			setUint32(buf[copyAt+1:], uint32(len(buf)-copyAt-1))
			out, buf = append(out, append(buf, 'c', 0, 0, 0, 4)), nil
		}
	}
	if len(rows) > 0 {
		t.copyRowBytes.Store(int64(total / len(rows)))
	}
	return out, nil
}

func setUint32(b []byte, n uint32) {
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

// copyInOneWrite sends msgs (a COPY … FROM STDIN, its data and the end of the data,
// encoded) in one write on conn, idle, and reads the answer up to ReadyForQuery.
// PostgreSQL reads the data from its socket once the statement starts; an error
// before or during the COPY makes it ignore the rest, as the protocol says, and
// answer with the error.
func copyInOneWrite(ctx context.Context, conn *pgconn.PgConn, msgs []byte) (pgconn.CommandTag, error) {
	if err := conn.Frontend().SendUnbufferedEncodedCopyData(msgs); err != nil {
		// Part of the messages may be out: the connection cannot be trusted.
		_ = conn.Close(context.WithoutCancel(ctx))
		return pgconn.CommandTag{}, fmt.Errorf("COPY: write: %w", err)
	}
	var tag pgconn.CommandTag
	var pgErr error
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			// The answer was not read to its end (ctx ended, or the connection
			// broke): the connection's next reader would get the rest. pgconn
			// closes its own in that case; this one must too.
			_ = conn.Close(context.WithoutCancel(ctx))
			return pgconn.CommandTag{}, err
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
