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
	StaleClaimAfter time.Duration
}

// NewStore returns a store whose tables live in schema.
func NewStore(schema string) *Store {
	return &Store{schema: schema, StaleClaimAfter: StaleClaimAfterDefault}
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
	next, err := store.ClaimOffset(ctx, db, s.schema, store.Partition(k), owner.Generation, owner.Member, s.StaleClaimAfter)
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
	if err := store.TouchOffset(ctx, db, s.schema, store.Partition(k), owner.Generation, owner.Member); err != nil {
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
	return positions(store.ListOffsets(ctx, pool, s.schema, projection, version))
}

// ListEffect returns the stored watermarks of one effect of a projection version, by
// topic and partition.
func (s *Store) ListEffect(ctx context.Context, pool *pgxpool.Pool, effect, projection string, version int) ([]Position, error) {
	return positions(store.ListEffectOffsets(ctx, pool, s.schema, effect, projection, version))
}

func positions(rows []store.OffsetRow, err error) ([]Position, error) {
	if err != nil {
		return nil, fmt.Errorf("offsets: list: %w", err)
	}
	var out []Position
	for _, r := range rows {
		out = append(out, position(r))
	}
	return out, nil
}

func position(r store.OffsetRow) Position {
	return Position{Key: Key(r.Key), Next: r.Next, Generation: r.Generation, Member: r.Member, Consumed: r.Consumed, UpdatedAt: r.UpdatedAt}
}

// Forget deletes every stored position of a projection version: its read model's and
// its effects'.
func (s *Store) Forget(ctx context.Context, db Execer, projection string, version int) error {
	if err := store.ForgetOffsets(ctx, db, s.schema, projection, version); err != nil {
		return fmt.Errorf("offsets: forget %s_v%d: %w", projection, version, err)
	}
	return nil
}

// Get returns one stored position; ok is false when none is stored.
func (s *Store) Get(ctx context.Context, db Querier, k Key) (p Position, ok bool, err error) {
	row, err := store.GetOffset(ctx, db, s.schema, store.Partition(k))
	if errors.Is(err, pgx.ErrNoRows) {
		return Position{Key: k}, false, nil
	}
	if err != nil {
		return Position{Key: k}, false, fmt.Errorf("offsets: get %s: %w", k, err)
	}
	return position(row), true, nil
}
