package projectortest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projectortest"
)

func TestHarnessAppliesTheExampleDomain(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	name := testenv.UniqueName(t)
	p, err := domain.NewProjection("ptest"+name[len(name)-10:], 1)
	if err != nil {
		t.Fatal(err)
	}
	h := projectortest.New(t, pool, p)
	reg := domain.Registry()
	mk := func(v any) events.Event {
		e, err := reg.New("t", "u1", v)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	ctx := context.Background()
	err = h.Apply(ctx,
		mk(domain.UserRegistered{UserID: "u1", Email: "u1@example.test", Name: "Ada"}),
		mk(domain.UserPublishedAnArticle{UserID: "u1", ArticleID: "a1", Title: "T", Body: "B"}),
		mk(domain.UserPublishedAnArticle{UserID: "u1", ArticleID: "a2", Title: "T", Body: "B"}),
		mk(domain.ArticleDeleted{UserID: "u1", ArticleID: "a1"}))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := h.DB().QueryRow(ctx, `SELECT article_count FROM users WHERE user_id = 'u1'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("article_count %d, want 1", n)
	}
	// A failing statement fails the whole Apply and commits nothing of it.
	err = h.Apply(ctx, mk(domain.UserPublishedAnArticle{UserID: "u1", ArticleID: "a3", Title: "T", Body: "B"}),
		mk(domain.UserPublishedAnArticle{UserID: "u1", ArticleID: "a2", Title: "dup", Body: "B"}))
	if err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("err = %v, want the duplicate key named", err)
	}
	if err := h.DB().QueryRow(ctx, `SELECT article_count FROM users WHERE user_id = 'u1'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after a failed Apply article_count %d (%v), want 1", n, err)
	}
}
