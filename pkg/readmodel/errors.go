package readmodel

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// Transient marks a handler's error as transient: the batch is retried with backoff
// and the event is never parked for it.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

// IsTransient reports whether err is worth retrying unchanged: marked with Transient,
// a network or connection failure, or a PostgreSQL condition that passes — read-only
// (a replica, or default_transaction_read_only), out of disk or memory, too many
// connections, shutting down or starting up, serialization failures and deadlocks,
// lock, statement and idle-in-transaction timeouts. Everything else is permanent: the event parks.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.As(err, new(transientError)) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		code := pgErr.Code
		switch {
		case strings.HasPrefix(code, "08"): // connection exception
			return true
		case strings.HasPrefix(code, "53"): // insufficient resources: disk full, out of memory, too many connections
			return true
		case strings.HasPrefix(code, "57P"): // admin/crash shutdown, cannot connect now
			return true
		}
		switch code {
		case "40001", "40P01", // serialization failure, deadlock
			"25006",          // read-only SQL transaction
			"25P03", "25P04", // the session ended by idle_in_transaction_session_timeout / transaction_timeout
			"55P03",          // lock not available
			"57014",          // query canceled (statement timeout)
			"58000", "58030": // system error, I/O error
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "conn closed") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe")
}

// staleMarker starts the message of the error an upsert raises for a key it was
// told is absent and found present (see Table's upsert).
const staleMarker = "projector-stale-key:"

// staleKey reports whether err is the error an upsert raises for a stale key, and
// the key: PostgreSQL's "invalid input syntax for type integer" (22P02) of the
// marker and the key.
func staleKey(err error) (string, bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" {
		return "", false
	}
	_, rest, ok := strings.Cut(pgErr.Message, staleMarker+" ")
	if !ok {
		return "", false
	}
	return strings.TrimSuffix(rest, `"`), true
}
