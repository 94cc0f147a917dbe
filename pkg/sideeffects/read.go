package sideeffects

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Beginner starts transactions: a *pgxpool.Pool, a *pgx.Conn.
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// ReadModel is an effect run's read-only handle on its projection's read model (see
// Run.ReadModel): queries name the projection's tables unqualified (the search_path
// is the versioned schema, NAME_vN) and run in a READ ONLY transaction.
//
// What it sees: the read model as of the run's event's commit, or later. Effects
// run only after the transaction that applied their event has committed, so a row
// the event wrote is there; events after it may have been applied too (the read
// model does not wait for its effects while live), so a row may already show a
// later state. A run retried after a crash, or from the DLQ, sees the read model as
// it is then.
type ReadModel struct {
	db     Beginner
	schema string
}

// NewReadModel returns a read-only handle on the tables in schema, over db. The
// runtime makes one for every run; tests of an effect's function make their own.
func NewReadModel(db Beginner, schema string) *ReadModel {
	return &ReadModel{db: db, schema: schema}
}

// Schema is the schema the handle reads: the projection's versioned schema.
func (m *ReadModel) Schema() string { return m.schema }

// Read runs fn in a READ ONLY transaction whose search_path is the read model's
// schema, then ends it. A write in fn fails (SQLSTATE 25006). fn must not keep tx.
// Errors reading are transient to the effect (it is retried) unless fn makes them
// Permanent.
func (m *ReadModel) Read(ctx context.Context, fn func(tx pgx.Tx) error) (err error) {
	if m == nil || m.db == nil {
		return errors.New("sideeffects: this run has no read model")
	}
	tx, err := m.db.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("read model %s: begin: %w", m.schema, err)
	}
	defer func() { err = errors.Join(err, tx.Rollback(context.WithoutCancel(ctx))) }()
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", pgx.Identifier{m.schema}.Sanitize()); err != nil {
		return fmt.Errorf("read model %s: search_path: %w", m.schema, err)
	}
	return fn(tx)
}
