package offsets

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/store"
)

// Key names one partition of one projection version.
type Key struct {
	Projection string
	Version    int
	Topic      string
	Partition  int
}

func (k Key) String() string {
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
	StaleClaimAfter time.Duration
}

// NewStore returns a store whose table lives in schema.
func NewStore(schema string) *Store {
	return &Store{schema: schema, table: pgx.Identifier{schema, "offsets"}.Sanitize(), StaleClaimAfter: StaleClaimAfterDefault}
}

// Table returns the quoted name of the offsets table.
func (s *Store) Table() string { return s.table }

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
	var next int64
	err := db.QueryRow(ctx, `
		INSERT INTO `+s.table+` AS o (projection, version, topic, partition, next_offset, generation, member)
		VALUES ($1, $2, $3, $4, 0, $5, $6)
		ON CONFLICT (projection, version, topic, partition) DO UPDATE
		   SET generation = EXCLUDED.generation, member = EXCLUDED.member, updated_at = now()
		 WHERE o.generation <= EXCLUDED.generation OR o.updated_at < now() - $7::interval
		RETURNING next_offset`,
		k.Projection, k.Version, k.Topic, k.Partition, owner.Generation, owner.Member, s.StaleClaimAfter.String(),
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
	_, err := db.Exec(ctx, `UPDATE `+s.table+` SET updated_at = now()
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4 AND generation = $5 AND member = $6`,
		k.Projection, k.Version, k.Topic, k.Partition, owner.Generation, owner.Member)
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
	return `UPDATE ` + s.table + `
		   SET next_offset = $7, consumed = consumed + $8, updated_at = now()
		 WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4
		   AND generation = $5 AND member = $6 AND next_offset = $9`,
		[]any{k.Projection, k.Version, k.Topic, k.Partition, owner.Generation, owner.Member, next, consumed, expected}
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

// List returns the stored positions of a projection version, by topic and partition.
func (s *Store) List(ctx context.Context, pool *pgxpool.Pool, projection string, version int) ([]Position, error) {
	rows, err := pool.Query(ctx, `SELECT projection, version, topic, partition, next_offset, generation, member, consumed, updated_at
		FROM `+s.table+` WHERE projection = $1 AND version = $2 ORDER BY topic, partition`, projection, version)
	if err != nil {
		return nil, fmt.Errorf("offsets: list: %w", err)
	}
	defer rows.Close()
	var out []Position
	for rows.Next() {
		var p Position
		if err := rows.Scan(&p.Projection, &p.Version, &p.Topic, &p.Partition, &p.Next, &p.Generation, &p.Member, &p.Consumed, &p.UpdatedAt); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Get returns one stored position; ok is false when none is stored.
func (s *Store) Get(ctx context.Context, db Querier, k Key) (p Position, ok bool, err error) {
	p.Key = k
	err = db.QueryRow(ctx, `SELECT next_offset, generation, member, consumed, updated_at FROM `+s.table+`
		WHERE projection = $1 AND version = $2 AND topic = $3 AND partition = $4`,
		k.Projection, k.Version, k.Topic, k.Partition).Scan(&p.Next, &p.Generation, &p.Member, &p.Consumed, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("offsets: get %s: %w", k, err)
	}
	return p, true, nil
}
