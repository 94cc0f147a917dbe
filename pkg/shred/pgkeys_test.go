package shred_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/shred"
)

func TestPGKeysEnvelopeCacheAndForget(t *testing.T) {
	pool, _ := testenv.Postgres(t)
	ctx := context.Background()
	schema := "keys_" + testenv.UniqueName(t)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	master, _ := shred.ParseMasterKey(shred.NewMasterKey())
	a, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	// A second process with the same master key (and its own cache).
	b, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{Schema: schema, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A wrong master key is refused at open, and so is a malformed one.
	other, _ := shred.ParseMasterKey(shred.NewMasterKey())
	if _, err := shred.OpenPG(ctx, pool, other, shred.PGOptions{Schema: schema}); !errors.Is(err, shred.ErrWrongMasterKey) {
		t.Fatalf("wrong master key: %v", err)
	}
	if _, err := shred.OpenPG(ctx, pool, master[:16], shred.PGOptions{Schema: schema}); !errors.Is(err, shred.ErrBadMasterKey) {
		t.Fatalf("short master key: %v", err)
	}
	if _, err := shred.OpenPG(ctx, pool, nil, shred.PGOptions{Schema: schema}); !errors.Is(err, shred.ErrNoMasterKey) {
		t.Fatalf("no master key: %v", err)
	}

	ks, err := a.DataKeys(ctx, []string{"s1", "s2", "s1"})
	if err != nil || len(ks) != 2 {
		t.Fatalf("DataKeys: %v %v", ks, err)
	}
	again, err := b.DataKeys(ctx, []string{"s1"})
	if err != nil || again["s1"].ID != ks["s1"].ID {
		t.Fatalf("a second store got another key for s1: %v %v", again, err)
	}
	// Keys rest encrypted: the row holds neither the secret nor anything usable
	// without the master key.
	var wrapped []byte
	if err := pool.QueryRow(ctx, `SELECT wrapped FROM `+pgx.Identifier{schema, "data_keys"}.Sanitize()+` WHERE subject = 's2'`).Scan(&wrapped); err != nil {
		t.Fatal(err)
	}
	if len(wrapped) != 12+32+16 {
		t.Fatalf("wrapped key is %d bytes, want nonce+secret+tag = 60", len(wrapped))
	}

	// b has s1's key cached. a forgets s1: b keeps using its cached key until it
	// evicts (the projector evicts on reading SubjectForgotten), then sees it gone.
	if got, _ := b.Lookup(ctx, []string{ks["s1"].ID}); len(got) != 1 {
		t.Fatal("b has no s1 key before forget")
	}
	f, err := a.Forget(ctx, "s1")
	if err != nil || f.Keys != 1 || f.Subject != "s1" {
		t.Fatalf("Forget: %+v %v", f, err)
	}
	if got, _ := a.Lookup(ctx, []string{ks["s1"].ID}); !got[ks["s1"].ID].Forgotten {
		t.Fatal("the forgetting store still returns the key")
	}
	if got, _ := b.Lookup(ctx, []string{ks["s1"].ID}); got[ks["s1"].ID].Forgotten {
		t.Fatal("b's cache should still hold the key until it evicts")
	}
	b.Evict("s1")
	if got, _ := b.Lookup(ctx, []string{ks["s1"].ID}); !got[ks["s1"].ID].Forgotten || got[ks["s1"].ID].Subject != "s1" {
		t.Fatalf("b still returns s1's key after evicting it: %+v", got)
	}
	// An id this store never held is not "forgotten": it is left out (Open refuses it).
	if got, _ := a.Lookup(ctx, []string{"0123456789abcdef"}); len(got) != 0 {
		t.Fatalf("an unknown id came back: %+v", got)
	}
	if _, err := a.DataKeys(ctx, []string{"s1"}); !errors.Is(err, shred.ErrSubjectForgotten) {
		t.Fatalf("a new key for a forgotten subject: %v", err)
	}
	fs, err := b.Forgotten(ctx, time.Time{})
	if err != nil || len(fs) != 1 || fs[0].Subject != "s1" {
		t.Fatalf("Forgotten: %+v %v", fs, err)
	}
	// Forgetting again keeps the first time.
	if f2, err := a.Forget(ctx, "s1"); err != nil || !f2.At.Equal(f.At) || f2.Keys != 1 {
		t.Fatalf("forget again: %+v %v", f2, err)
	}

	// A tampered key row is a clear error for its events, not a wrong key silently
	// used, and not an error that stops every reader.
	sealed := sealed(t, a, "s2")
	if _, err := pool.Exec(ctx, `UPDATE `+pgx.Identifier{schema, "data_keys"}.Sanitize()+` SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1) WHERE subject = 's2'`); err != nil {
		t.Fatal(err)
	}
	c, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(ctx, []string{ks["s2"].ID}); err != nil {
		t.Fatalf("a tampered key row failed the whole lookup: %v", err)
	}
	err = shred.Open(ctx, c, nil, &sealed[0])
	var se *shred.Error
	if !errors.As(err, &se) || !errors.Is(err, shred.ErrTampered) || !strings.Contains(err.Error(), ks["s2"].ID) {
		t.Fatalf("tampered key row: %v", err)
	}
}
