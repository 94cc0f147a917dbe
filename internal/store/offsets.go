package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Queries on offsets (the read model's position per partition) and effect_offsets
// (each effect's watermark per partition). Package offsets is their public face.

// Partition names one partition of one projection version: the read model's
// position, or, with Effect set, that effect's watermark. Its fields are
// offsets.Key's, in the same order, so that one converts to the other.
type Partition struct {
	Projection string
	Version    int
	Topic      string
	Partition  int
	Effect     string // "" for the read model
}

// OffsetRow is one stored position.
type OffsetRow struct {
	Key        Partition
	Next       int64 // the next offset to read
	Generation int32 // the owner's Kafka group generation
	Member     string
	Consumed   int64 // events read and settled
	UpdatedAt  time.Time
}

// placeOffset returns where k's row lives: its table, its key columns, the condition
// that matches it (parameters $1…), and the condition's arguments. Further
// parameters are numbered from len(args)+1.
func placeOffset(schema string, k Partition) (tbl, cols, match string, args []any) {
	if k.Effect != "" {
		return table(schema, tableEffectOffsets), "effect, projection, version, topic, partition",
			"effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5",
			[]any{k.Effect, k.Projection, k.Version, k.Topic, k.Partition}
	}
	return table(schema, tableOffsets), "projection, version, topic, partition",
		"projection = $1 AND version = $2 AND topic = $3 AND partition = $4",
		[]any{k.Projection, k.Version, k.Topic, k.Partition}
}

// params renders "$from, $from+1, … " for n parameters.
func params(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}

// ClaimOffset makes (generation, member) the holder of k's row, creating it at offset
// 0, and returns the next offset to read. It succeeds when the stored generation is
// not newer, or when the stored claim was last written more than staleAfter ago;
// otherwise it returns pgx.ErrNoRows. It waits for an in-flight batch of the
// previous owner to commit or roll back (the row's lock).
func ClaimOffset(ctx context.Context, db RowQuerier, schema string, k Partition, generation int32, member string, staleAfter time.Duration) (int64, error) {
	tbl, cols, _, args := placeOffset(schema, k)
	n := len(args)
	var next int64
	err := db.QueryRow(ctx, `
		INSERT INTO `+tbl+` AS o (`+cols+`, next_offset, generation, member)
		VALUES (`+params(1, n)+`, 0, $`+strconv.Itoa(n+1)+`, $`+strconv.Itoa(n+2)+`)
		ON CONFLICT (`+cols+`) DO UPDATE
		   SET generation = EXCLUDED.generation, member = EXCLUDED.member, updated_at = now()
		 WHERE o.generation <= EXCLUDED.generation OR o.updated_at < now() - $`+strconv.Itoa(n+3)+`::interval
		RETURNING next_offset`,
		append(args, generation, member, staleAfter.String())...,
	).Scan(&next)
	return next, err
}

// TouchOffset refreshes the claim of (generation, member) on k's row; it changes
// nothing when another owner holds it.
func TouchOffset(ctx context.Context, db Execer, schema string, k Partition, generation int32, member string) error {
	tbl, _, match, args := placeOffset(schema, k)
	n := len(args)
	_, err := db.Exec(ctx, `UPDATE `+tbl+` SET updated_at = now()
		WHERE `+match+` AND generation = $`+strconv.Itoa(n+1)+` AND member = $`+strconv.Itoa(n+2),
		append(args, generation, member)...)
	return err
}

// AdvanceOffset returns the compare-and-set statement that moves k's row from an
// expected next offset to a new one, adding consumed, and its arguments. It must
// affect exactly one row; none means (generation, member) no longer owns the
// partition, or the expected offset is stale, and the caller must not commit. The
// runtime queues it in a batch's transaction.
func AdvanceOffset(schema string, k Partition, generation int32, member string, expected, next, consumed int64) (string, []any) {
	tbl, _, match, args := placeOffset(schema, k)
	n := len(args)
	p := func(i int) string { return "$" + strconv.Itoa(n+i) }
	return `UPDATE ` + tbl + `
		   SET next_offset = ` + p(3) + `, consumed = consumed + ` + p(4) + `, updated_at = now()
		 WHERE ` + match + `
		   AND generation = ` + p(1) + ` AND member = ` + p(2) + ` AND next_offset = ` + p(5),
		append(args, generation, member, next, consumed, expected)
}

// GetOffset returns k's stored row; pgx.ErrNoRows when there is none.
func GetOffset(ctx context.Context, db RowQuerier, schema string, k Partition) (OffsetRow, error) {
	row := OffsetRow{Key: k}
	tbl, _, match, args := placeOffset(schema, k)
	err := db.QueryRow(ctx, `SELECT next_offset, generation, member, consumed, updated_at FROM `+tbl+`
		WHERE `+match, args...).Scan(&row.Next, &row.Generation, &row.Member, &row.Consumed, &row.UpdatedAt)
	return row, err
}

// ListOffsets returns the stored positions of a projection version's read model, by
// topic and partition.
func ListOffsets(ctx context.Context, db Querier, schema, projection string, version int) ([]OffsetRow, error) {
	return listOffsets(ctx, db, table(schema, tableOffsets), "", `projection = $1 AND version = $2`, projection, version)
}

// ListEffectOffsets returns the stored watermarks of one effect of a projection
// version, by topic and partition.
func ListEffectOffsets(ctx context.Context, db Querier, schema, effect, projection string, version int) ([]OffsetRow, error) {
	return listOffsets(ctx, db, table(schema, tableEffectOffsets), effect, `projection = $1 AND version = $2 AND effect = $3`, projection, version, effect)
}

func listOffsets(ctx context.Context, db Querier, tbl, effect, match string, args ...any) ([]OffsetRow, error) {
	rows, err := db.Query(ctx, `SELECT projection, version, topic, partition, next_offset, generation, member, consumed, updated_at
		FROM `+tbl+` WHERE `+match+` ORDER BY topic, partition`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OffsetRow
	for rows.Next() {
		p := OffsetRow{Key: Partition{Effect: effect}}
		if err := rows.Scan(&p.Key.Projection, &p.Key.Version, &p.Key.Topic, &p.Key.Partition, &p.Next, &p.Generation, &p.Member, &p.Consumed, &p.UpdatedAt); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ForgetOffsets deletes every stored position of a projection version: its read
// model's and its effects'.
func ForgetOffsets(ctx context.Context, db Execer, schema, projection string, version int) error {
	for _, t := range []string{tableOffsets, tableEffectOffsets} {
		if _, err := db.Exec(ctx, `DELETE FROM `+table(schema, t)+` WHERE projection = $1 AND version = $2`, projection, version); err != nil {
			return err
		}
	}
	return nil
}

// SumNextOffsets returns the sum of a projection version's stored read-model
// positions on topic: how many events it has passed there, when the topic's
// partitions start at 0.
func SumNextOffsets(ctx context.Context, db RowQuerier, schema, projection string, version int, topic string) (int64, error) {
	var sum int64
	err := db.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM `+table(schema, tableOffsets)+
		` WHERE projection = $1 AND version = $2 AND topic = $3`, projection, version, topic).Scan(&sum)
	return sum, err
}

// SumEffectNextOffsets returns the sum of an effect's stored watermarks on topic,
// for a projection version: how many events it has passed there, when the topic's
// partitions start at 0.
func SumEffectNextOffsets(ctx context.Context, db RowQuerier, schema, effect, projection string, version int, topic string) (int64, error) {
	var sum int64
	err := db.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM `+table(schema, tableEffectOffsets)+
		` WHERE effect = $1 AND projection = $2 AND version = $3 AND topic = $4`, effect, projection, version, topic).Scan(&sum)
	return sum, err
}

// SumNextOffsetsAnyVersion returns the sum of a projection's stored read-model
// positions, over its versions and topics.
func SumNextOffsetsAnyVersion(ctx context.Context, db RowQuerier, schema, projection string) (int64, error) {
	var sum int64
	err := db.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM `+table(schema, tableOffsets)+`
		WHERE projection = $1`, projection).Scan(&sum)
	return sum, err
}

// NextOffsetsAnyVersion returns a projection's stored read-model positions on topic,
// by partition, over its versions (a later row of a partition wins).
func NextOffsetsAnyVersion(ctx context.Context, db Querier, schema, projection, topic string) (map[int]int64, error) {
	rows, err := db.Query(ctx, `SELECT partition, next_offset FROM `+table(schema, tableOffsets)+` WHERE projection = $1 AND topic = $2`, projection, topic)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var p int
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			return out, err
		}
		out[p] = n
	}
	return out, rows.Err()
}

// OffsetOwners returns the member id stored as the owner of each partition of a
// projection's read model, over its versions and topics (a later row wins).
func OffsetOwners(ctx context.Context, db Querier, schema, projection string) (map[int]string, error) {
	rows, err := db.Query(ctx, `SELECT partition, member FROM `+table(schema, tableOffsets)+` WHERE projection = $1`, projection)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var p int
		var m string
		if rows.Scan(&p, &m) == nil {
			out[p] = m
		}
	}
	return out, rows.Err()
}

// OffsetsExist reports whether schema has an offsets table: with no migration
// recorded, whether an older build made the tables before migrations were numbered.
func OffsetsExist(ctx context.Context, db RowQuerier, schema string) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table(schema, tableOffsets)).Scan(&ok)
	return ok, err
}

// TriggerOnOffsets (re)creates the trigger name on the offsets table of schema, run
// for each row inserted or updated, after the write: function is its function's
// quoted, qualified name. The chaos harness audits every position write with it.
func TriggerOnOffsets(ctx context.Context, db Execer, schema, name, function string) error {
	tbl := table(schema, tableOffsets)
	trigger := pgx.Identifier{name}.Sanitize()
	for _, q := range []string{
		`DROP TRIGGER IF EXISTS ` + trigger + ` ON ` + tbl,
		`CREATE TRIGGER ` + trigger + ` AFTER INSERT OR UPDATE ON ` + tbl + ` FOR EACH ROW EXECUTE FUNCTION ` + function,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}
