package offsets_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/offsets"
)

func TestClaimAndAdvanceAreFenced(t *testing.T) {
	t.Parallel()
	for _, effect := range []string{"", "welcome_email"} {
		t.Run("effect="+effect, func(t *testing.T) { claimAndAdvance(t, effect) })
	}
}

// claimAndAdvance runs the fencing checks on a read model's position, or on an
// effect's watermark (a table of its own).
func claimAndAdvance(t *testing.T, effect string) {
	pool, schema := testenv.Postgres(t)
	ctx := context.Background()
	s := offsets.NewStore(schema)
	if err := s.Setup(ctx, pool); err != nil {
		t.Fatal(err)
	}
	k := offsets.Key{Projection: "users", Version: 1, Topic: "t", Partition: 3, Effect: effect}
	a := offsets.Owner{Generation: 5, Member: "a"}
	b := offsets.Owner{Generation: 6, Member: "b"}

	advance := func(o offsets.Owner, expected, next int64) int64 {
		sql, args := store.AdvanceOffset(schema, store.Partition(k), o.Generation, o.Member, expected, next, next-expected)
		tag, err := pool.Exec(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		return tag.RowsAffected()
	}
	if next, err := s.Claim(ctx, pool, k, a); err != nil || next != 0 {
		t.Fatalf("first claim: %d %v, want offset 0", next, err)
	}
	if n := advance(a, 0, 100); n != 1 {
		t.Fatalf("owner's advance affected %d rows", n)
	}
	if n := advance(a, 0, 200); n != 0 {
		t.Fatal("an advance from a stale expected offset went through")
	}
	if next, err := s.Claim(ctx, pool, k, b); err != nil || next != 100 {
		t.Fatalf("b's claim: %d %v, want offset 100", next, err)
	}
	if n := advance(a, 100, 150); n != 0 {
		t.Fatal("the fenced owner advanced the partition after another claimed it")
	}
	if _, err := s.Claim(ctx, pool, k, a); !errors.Is(err, offsets.ErrFenced) {
		t.Fatalf("a claim from an older generation: %v, want ErrFenced", err)
	}
	if n := advance(b, 100, 150); n != 1 {
		t.Fatal("the new owner could not advance")
	}
	pos, ok, err := s.Get(ctx, pool, k)
	if err != nil || !ok || pos.Next != 150 || pos.Member != "b" || pos.Consumed != 150 {
		t.Fatalf("stored %+v %v %v", pos, ok, err)
	}

	// Kafka restarts generation numbers when a group is deleted: after
	// StaleClaimAfter, a lower generation may claim.
	s.StaleClaimAfter = time.Millisecond
	time.Sleep(20 * time.Millisecond)
	c := offsets.Owner{Generation: 1, Member: "c"}
	if next, err := s.Claim(ctx, pool, k, c); err != nil || next != 150 {
		t.Fatalf("a stale claim from generation 1: %d %v", next, err)
	}
	if n := advance(b, 150, 160); n != 0 {
		t.Fatal("the previous owner advanced after a stale claim took over")
	}
}
