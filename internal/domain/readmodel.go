package domain

import (
	"context"
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
	p.Migrate(
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
	)
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v UserRegistered) error {
		w.Exec(`INSERT INTO users (user_id, email, name, registered_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, registered_at = EXCLUDED.registered_at`,
			v.UserID, v.Email, v.Name, e.Time)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v UserChangedPassword) error {
		w.Exec(`UPDATE users SET password_changed_at = $2 WHERE user_id = $1`, v.UserID, e.Time)
		return nil
	})
	// Counting is not idempotent on purpose: applied twice, the count would be wrong,
	// so the tests catch any event applied more than once.
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, e events.Event, v UserPublishedAnArticle) error {
		w.Exec(`INSERT INTO articles (article_id, user_id, title, body, published_at) VALUES ($1, $2, $3, $4, $5)`,
			v.ArticleID, v.UserID, v.Title, v.Body, e.Time)
		w.Exec(`UPDATE users SET article_count = article_count + 1 WHERE user_id = $1`, v.UserID)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v ArticleDeleted) error {
		w.Exec(`WITH d AS (DELETE FROM articles WHERE article_id = $1 RETURNING user_id)
			UPDATE users SET article_count = article_count - (SELECT count(*) FROM d) WHERE user_id = $2`, v.ArticleID, v.UserID)
		return nil
	})
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v UserDeleted) error {
		w.Exec(`DELETE FROM articles WHERE user_id = $1`, v.UserID)
		w.Exec(`DELETE FROM users WHERE user_id = $1`, v.UserID)
		return nil
	})
	// Forgetting a user keeps the row (its counts are not personal) and overwrites
	// what was: a replay after the forgetting writes the same marker from the
	// redacted UserRegistered, so live and replayed read models agree.
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v shred.SubjectForgotten) error {
		w.Exec(`UPDATE users SET email = $2, name = $2 WHERE user_id = $1`, v.SubjectID, shred.Redacted)
		return nil
	})
	return p, nil
}

// User is a row of the read model's users table.
type User struct {
	UserID            string     `json:"user_id"`
	Email             string     `json:"email"`
	Name              string     `json:"name"`
	RegisteredAt      time.Time  `json:"registered_at"`
	PasswordChangedAt *time.Time `json:"password_changed_at,omitempty"`
	ArticleCount      int        `json:"article_count"`
}

// Article is a row of the read model's articles table.
type Article struct {
	ArticleID   string    `json:"article_id"`
	UserID      string    `json:"user_id"`
	Title       string    `json:"title"`
	Body        string    `json:"body,omitempty"`
	PublishedAt time.Time `json:"published_at"`
}
