package domain

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// ProjectionName is the example read model's name; its tables live in users_vN.
const ProjectionName = "users"

// NewProjection returns the example read model: users with their article counts, and
// articles. Name is usually ProjectionName; tests give each their own.
func NewProjection(name string, version int) (*readmodel.Projection, error) {
	p, err := readmodel.New(name, version, Registry())
	if err != nil {
		return nil, err
	}
	p.Migrate(migrations...)
	handleRows(p)
	// Forgetting a user keeps the row (its counts are not personal) and overwrites
	// what was: a replay after the forgetting writes the same marker from the
	// redacted UserRegistered, so live and replayed read models agree. It stays on
	// Exec, the slow path for SQL the row API cannot say, to show and test it: the
	// rows in memory are written before the statement and read again after it.
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v shred.SubjectForgotten) error {
		w.Exec(`UPDATE users SET email = $2, name = $2 WHERE user_id = $1`, v.SubjectID, shred.Redacted)
		return nil
	})
	return p, nil
}

// handleRows registers the handlers that keep users and articles through the row
// API: each row read once per batch and written once, in key order.
func handleRows(p *readmodel.Projection) {
	users := readmodel.NewTable[string, User](p, "users", "user_id")
	articles := readmodel.NewTable[string, Article](p, "articles", "article_id")
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, e events.Event, v UserRegistered) error {
		u, _, err := users.Get(ctx, w, v.UserID) // registering again keeps the counts
		if err != nil {
			return err
		}
		u.UserID, u.Email, u.Name, u.RegisteredAt = v.UserID, v.Email, v.Name, e.Time
		users.Put(w, u)
		return nil
	}, readmodel.Loads(users, func(v UserRegistered) string { return v.UserID }))
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, e events.Event, v UserChangedPassword) error {
		_, err := users.Update(ctx, w, v.UserID, func(u *User) { u.PasswordChangedAt = &e.Time })
		return err
	}, readmodel.Loads(users, func(v UserChangedPassword) string { return v.UserID }))
	// Counting is not idempotent on purpose: applied twice, the count would be wrong,
	// so the tests catch any event applied more than once.
	// An article id published twice is refused (the event parks), as the INSERT did.
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, e events.Event, v UserPublishedAnArticle) error {
		if _, dup, err := articles.Get(ctx, w, v.ArticleID); err != nil || dup {
			return cmp.Or(err, fmt.Errorf("article %s: duplicate key: already published", v.ArticleID))
		}
		articles.Put(w, Article{ArticleID: v.ArticleID, UserID: v.UserID, Title: v.Title, Body: v.Body, PublishedAt: e.Time})
		_, err := users.Update(ctx, w, v.UserID, func(u *User) { u.ArticleCount++ })
		return err
	}, readmodel.Loads(articles, func(v UserPublishedAnArticle) string { return v.ArticleID }),
		readmodel.Loads(users, func(v UserPublishedAnArticle) string { return v.UserID }))
	readmodel.Handle(p, func(ctx context.Context, w *readmodel.Writer, _ events.Event, v ArticleDeleted) error {
		if _, ok, err := articles.Get(ctx, w, v.ArticleID); err != nil || !ok {
			return err
		}
		articles.Delete(w, v.ArticleID)
		_, err := users.Update(ctx, w, v.UserID, func(u *User) { u.ArticleCount-- })
		return err
	}, readmodel.Loads(articles, func(v ArticleDeleted) string { return v.ArticleID }),
		readmodel.Loads(users, func(v ArticleDeleted) string { return v.UserID }))
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v UserDeleted) error {
		articles.DeleteWhere(w, "user_id", v.UserID)
		users.Delete(w, v.UserID)
		return nil
	})
}

// migrations make the example read model's tables.
var migrations = []string{
	`CREATE TABLE users (
			user_id             text PRIMARY KEY,
			email               text NOT NULL,
			name                text NOT NULL,
			registered_at       timestamptz NOT NULL,
			password_changed_at timestamptz,
			article_count       int NOT NULL DEFAULT 0)`,
	`CREATE TABLE articles (
			article_id   text PRIMARY KEY,
			user_id      text NOT NULL,
			title        text NOT NULL,
			body         text NOT NULL,
			published_at timestamptz NOT NULL)`,
	`CREATE INDEX articles_by_user ON articles (user_id)`,
}

// User is a row of the read model's users table.
type User struct {
	UserID            string     `json:"user_id" db:"user_id"`
	Email             string     `json:"email" db:"email"`
	Name              string     `json:"name" db:"name"`
	RegisteredAt      time.Time  `json:"registered_at" db:"registered_at"`
	PasswordChangedAt *time.Time `json:"password_changed_at,omitempty" db:"password_changed_at"`
	ArticleCount      int        `json:"article_count" db:"article_count"`
}

// Article is a row of the read model's articles table.
type Article struct {
	ArticleID   string    `json:"article_id" db:"article_id"`
	UserID      string    `json:"user_id" db:"user_id"`
	Title       string    `json:"title" db:"title"`
	Body        string    `json:"body,omitempty" db:"body"`
	PublishedAt time.Time `json:"published_at" db:"published_at"`
}
