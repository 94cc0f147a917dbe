package domain

import (
	"context"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// NewExecProjection returns the example read model with every handler on
// Writer.Exec, one statement per change in event order, as before the row API: the
// same tables and content as NewProjection, for the benchmarks to compare against.
func NewExecProjection(name string, version int) (*readmodel.Projection, error) {
	p, err := readmodel.New(name, version, Registry())
	if err != nil {
		return nil, err
	}
	p.Migrate(migrations...)
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
	readmodel.Handle(p, func(_ context.Context, w *readmodel.Writer, _ events.Event, v shred.SubjectForgotten) error {
		w.Exec(`UPDATE users SET email = $2, name = $2 WHERE user_id = $1`, v.SubjectID, shred.Redacted)
		return nil
	})
	return p, nil
}
