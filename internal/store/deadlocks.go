package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// CountDeadlock adds one to the batches a projection version lost to a deadlock on
// a partition, in the partition's stored position (the offsets table), which the
// claim created: the count outlives the runner's process, whichever instance runs.
// It runs on its own, outside the batch's transaction, which the deadlock ended.
func CountDeadlock(ctx context.Context, db Querier, schema, projection string, version int, topic string, partition int) error {
	rows, err := db.Query(ctx, `UPDATE `+pgx.Identifier{schema, "offsets"}.Sanitize()+` SET deadlocks = deadlocks + 1
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 RETURNING 1`, projection, version, topic, partition)
	var n int
	if err == nil {
		n, err = countRows(rows)
	}
	if err != nil {
		return fmt.Errorf("store: count a deadlock of %s v%d on %s/%d: %w", projection, version, topic, partition, err)
	}
	if n == 0 {
		return fmt.Errorf("store: count a deadlock of %s v%d on %s/%d: no stored position", projection, version, topic, partition)
	}
	return nil
}

// countRows reads rows to the end and says how many there were.
func countRows(rows pgx.Rows) (int, error) {
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

// Deadlocks returns, by partition, the batches a projection version lost to a
// deadlock on topic, as counted by CountDeadlock.
func Deadlocks(ctx context.Context, db Querier, schema, projection string, version int, topic string) (map[int]int64, error) {
	rows, err := db.Query(ctx, `SELECT partition, deadlocks FROM `+pgx.Identifier{schema, "offsets"}.Sanitize()+`
		WHERE projection = $1 AND version = $2 AND topic = $3`, projection, version, topic)
	if err != nil {
		return nil, fmt.Errorf("store: deadlocks of %s v%d on %s: %w", projection, version, topic, err)
	}
	out := map[int]int64{}
	var part int
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&part, &n}, func() error {
		out[part] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("store: deadlocks of %s v%d on %s: %w", projection, version, topic, err)
	}
	return out, nil
}
