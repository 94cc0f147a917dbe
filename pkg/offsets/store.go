package offsets

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/store"
)

// Key names one partition of one projection version: the read model's position, or,
// with Effect set, that effect's watermark (a table of its own).
type Key struct {
	Projection string
	Version    int
	Topic      string
	Partition  int
	Effect     string // "" for the read model
}

func (k Key) String() string {
	if k.Effect != "" {
		return fmt.Sprintf("%s_v%d effect %s/%s/%d", k.Projection, k.Version, k.Effect, k.Topic, k.Partition)
	}
	return fmt.Sprintf("%s_v%d/%s/%d", k.Projection, k.Version, k.Topic, k.Partition)
}

// Owner is the Kafka group member that holds a partition in one generation.
type Owner struct {
	Generation int32
	Member     string
}

// StaleClaimAfterDefault is how long after its last write a claim from a higher
// generation is no longer needed to take a partition over. Kafka restarts
// generation numbers when a group is deleted (after offsets.retention.minutes with
// no member), so a lower generation must eventually be able to claim.
const StaleClaimAfterDefault = 10 * time.Minute

// ErrFenced is returned when another owner holds the partition: this worker must stop.
var ErrFenced = errors.New("partition fenced: another group member owns it")

// Store reads and writes positions in a framework schema.
type Store struct {
	schema          string
	table           string // quoted schema.offsets
	effects         string // quoted schema.effect_offsets
	StaleClaimAfter time.Duration
}

// NewStore returns a store whose tables live in schema.
func NewStore(schema string) *Store {
	t := store.TablesIn(schema)
	return &Store{schema: schema, table: t.Offsets, effects: t.EffectOffsets, StaleClaimAfter: StaleClaimAfterDefault}
}

// place returns where k's row lives: its table, its key columns, the condition that
// matches it (parameters $1…), and the condition's arguments. Further parameters
// are numbered from len(args)+1.
func (s *Store) place(k Key) (table, cols, match string, args []any) {
	if k.Effect != "" {
		return s.effects, "effect, projection, version, topic, partition",
			"effect = $1 AND projection = $2 AND version = $3 AND topic = $4 AND partition = $5",
			[]any{k.Effect, k.Projection, k.Version, k.Topic, k.Partition}
	}
	return s.table, "projection, version, topic, partition",
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

// Setup applies the framework schema's pending migrations (package internal/store
// owns the offsets table with the others), under the setup lock, so instances
// starting together migrate once.
func (s *Store) Setup(ctx context.Context, db store.Beginner) error {
	_, err := store.Up(ctx, db, s.schema)
	return err
}

// Claim makes owner the holder of the partition and returns the next offset to read
// (0 for a new projection). It succeeds when the stored generation is not newer than
// owner's, or when the stored claim is stale; otherwise it returns ErrFenced. A claim
// waits for an in-flight batch of the previous owner to commit or roll back.
func (s *Store) Claim(ctx context.Context, db Querier, k Key, owner Owner) (int64, error) {
	table, cols, _, args := s.place(k)
	n := len(args)
	var next int64
	err := db.QueryRow(ctx, `
		INSERT INTO `+table+` AS o (`+cols+`, next_offset, generation, member)
		VALUES (`+params(1, n)+`, 0, $`+strconv.Itoa(n+1)+`, $`+strconv.Itoa(n+2)+`)
		ON CONFLICT (`+cols+`) DO UPDATE
		   SET generation = EXCLUDED.generation, member = EXCLUDED.member, updated_at = now()
		 WHERE o.generation <= EXCLUDED.generation OR o.updated_at < now() - $`+strconv.Itoa(n+3)+`::interval
		RETURNING next_offset`,
		append(args, owner.Generation, owner.Member, s.StaleClaimAfter.String())...,
	).Scan(&next)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("offsets: claim %s: %w", k, ErrFenced)
	}
	if err != nil {
		return 0, fmt.Errorf("offsets: claim %s: %w", k, err)
	}
	return next, nil
}

// Touch refreshes an owner's claim, so that an owner whose partition is idle is not
// taken for stale. It is a no-op when another owner holds the partition.
func (s *Store) Touch(ctx context.Context, db Execer, k Key, owner Owner) error {
	table, _, match, args := s.place(k)
	n := len(args)
	_, err := db.Exec(ctx, `UPDATE `+table+` SET updated_at = now()
		WHERE `+match+` AND generation = $`+strconv.Itoa(n+1)+` AND member = $`+strconv.Itoa(n+2),
		append(args, owner.Generation, owner.Member)...)
	if err != nil {
		return fmt.Errorf("offsets: touch %s: %w", k, err)
	}
	return nil
}

// Execer is what Touch needs of a pool, connection or transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Querier is what the store needs of a pool, connection or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AdvanceSQL returns the compare-and-set statement that moves a partition from an
// expected next offset to a new one, and its arguments. The runtime queues it in the
// batch transaction; it must report exactly one row affected, or the worker has been
// fenced and the transaction must roll back.
func (s *Store) AdvanceSQL(k Key, owner Owner, expected, next, consumed int64) (string, []any) {
	table, _, match, args := s.place(k)
	n := len(args)
	p := func(i int) string { return "$" + strconv.Itoa(n+i) }
	return `UPDATE ` + table + `
		   SET next_offset = ` + p(3) + `, consumed = consumed + ` + p(4) + `, updated_at = now()
		 WHERE ` + match + `
		   AND generation = ` + p(1) + ` AND member = ` + p(2) + ` AND next_offset = ` + p(5),
		append(args, owner.Generation, owner.Member, next, consumed, expected)
}

// Position is one stored partition position.
type Position struct {
	Key
	Next       int64
	Generation int32
	Member     string
	Consumed   int64
	UpdatedAt  time.Time
}

// List returns the stored positions of a projection version's read model, by topic
// and partition.
func (s *Store) List(ctx context.Context, pool *pgxpool.Pool, projection string, version int) ([]Position, error) {
	return s.list(ctx, pool, s.table, "", `projection = $1 AND version = $2`, projection, version)
}

// ListEffect returns the stored watermarks of one effect of a projection version, by
// topic and partition.
func (s *Store) ListEffect(ctx context.Context, pool *pgxpool.Pool, effect, projection string, version int) ([]Position, error) {
	return s.list(ctx, pool, s.effects, effect, `projection = $1 AND version = $2 AND effect = $3`, projection, version, effect)
}

func (s *Store) list(ctx context.Context, pool *pgxpool.Pool, table, effect, match string, args ...any) ([]Position, error) {
	rows, err := pool.Query(ctx, `SELECT projection, version, topic, partition, next_offset, generation, member, consumed, updated_at
		FROM `+table+` WHERE `+match+` ORDER BY topic, partition`, args...)
	if err != nil {
		return nil, fmt.Errorf("offsets: list: %w", err)
	}
	defer rows.Close()
	var out []Position
	for rows.Next() {
		p := Position{Key: Key{Effect: effect}}
		if err := rows.Scan(&p.Projection, &p.Version, &p.Topic, &p.Partition, &p.Next, &p.Generation, &p.Member, &p.Consumed, &p.UpdatedAt); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Forget deletes every stored position of a projection version: its read model's and
// its effects'.
func (s *Store) Forget(ctx context.Context, db Execer, projection string, version int) error {
	for _, t := range []string{s.table, s.effects} {
		if _, err := db.Exec(ctx, `DELETE FROM `+t+` WHERE projection = $1 AND version = $2`, projection, version); err != nil {
			return fmt.Errorf("offsets: forget %s_v%d: %w", projection, version, err)
		}
	}
	return nil
}

// Get returns one stored position; ok is false when none is stored.
func (s *Store) Get(ctx context.Context, db Querier, k Key) (p Position, ok bool, err error) {
	p.Key = k
	table, _, match, args := s.place(k)
	err = db.QueryRow(ctx, `SELECT next_offset, generation, member, consumed, updated_at FROM `+table+`
		WHERE `+match, args...).Scan(&p.Next, &p.Generation, &p.Member, &p.Consumed, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("offsets: get %s: %w", k, err)
	}
	return p, true, nil
}
