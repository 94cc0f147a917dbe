package domain

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// State is the example read model's content: what a correct projection holds.
type State struct {
	Users    map[string]User
	Articles map[string]Article
}

// Fold computes the read model from events in log order, independently of the
// projector: an event is skipped only when its id was applied before, as the
// projector promises (under --gaps warn, an event out of sequence order is applied
// in log order). Tests compare it with what the projector built.
func Fold(reg *events.Registry, evs []events.Event) (State, error) {
	s := State{Users: map[string]User{}, Articles: map[string]Article{}}
	seenID := map[string]bool{}
	byUser := map[string]map[string]bool{} // user -> the articles they published that exist
	for _, e := range evs {
		if seenID[e.ID] {
			continue
		}
		seenID[e.ID] = true
		d, err := reg.Decode(e)
		if err != nil {
			return s, fmt.Errorf("fold: event %s: %w", e.ID, err)
		}
		t := e.Time.UTC().Truncate(time.Microsecond)
		switch v := d.Value.(type) {
		case UserRegistered:
			u := s.Users[v.UserID]
			u.UserID, u.Email, u.Name, u.RegisteredAt = v.UserID, v.Email, v.Name, t
			s.Users[v.UserID] = u
		case UserChangedPassword:
			if u, ok := s.Users[v.UserID]; ok {
				u.PasswordChangedAt = &t
				s.Users[v.UserID] = u
			}
		case UserPublishedAnArticle:
			if a, ok := s.Articles[v.ArticleID]; ok && a.UserID != v.UserID {
				delete(byUser[a.UserID], v.ArticleID)
			}
			s.Articles[v.ArticleID] = Article{ArticleID: v.ArticleID, UserID: v.UserID, Title: v.Title, Body: v.Body, PublishedAt: t}
			if byUser[v.UserID] == nil {
				byUser[v.UserID] = map[string]bool{}
			}
			byUser[v.UserID][v.ArticleID] = true
			if u, ok := s.Users[v.UserID]; ok {
				u.ArticleCount++
				s.Users[v.UserID] = u
			}
		case ArticleDeleted:
			if a, ok := s.Articles[v.ArticleID]; ok {
				delete(s.Articles, v.ArticleID)
				delete(byUser[a.UserID], v.ArticleID)
				if u, ok := s.Users[v.UserID]; ok {
					u.ArticleCount--
					s.Users[v.UserID] = u
				}
			}
		case shred.SubjectForgotten:
			if u, ok := s.Users[v.SubjectID]; ok {
				u.Email, u.Name = shred.Redacted, shred.Redacted
				s.Users[v.SubjectID] = u
			}
		case UserDeleted:
			for id := range byUser[v.UserID] { // linear in the user's articles, not all of them
				delete(s.Articles, id)
			}
			delete(byUser, v.UserID)
			delete(s.Users, v.UserID)
		}
	}
	return s, nil
}

// Load reads the read model of the projection schema into a State.
func Load(ctx context.Context, pool *pgxpool.Pool, schema string) (State, error) {
	s := State{Users: map[string]User{}, Articles: map[string]Article{}}
	q := pgx.Identifier{schema}.Sanitize()
	rows, err := pool.Query(ctx, `SELECT user_id, email, name, registered_at, password_changed_at, article_count FROM `+q+`.users`)
	if err != nil {
		return s, err
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) {
		var u User
		err := r.Scan(&u.UserID, &u.Email, &u.Name, &u.RegisteredAt, &u.PasswordChangedAt, &u.ArticleCount)
		u.RegisteredAt = u.RegisteredAt.UTC()
		if u.PasswordChangedAt != nil {
			t := u.PasswordChangedAt.UTC()
			u.PasswordChangedAt = &t
		}
		return u, err
	})
	if err != nil {
		return s, err
	}
	for _, u := range users {
		s.Users[u.UserID] = u
	}
	rows, err = pool.Query(ctx, `SELECT article_id, user_id, title, body, published_at FROM `+q+`.articles`)
	if err != nil {
		return s, err
	}
	arts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Article, error) {
		var a Article
		err := r.Scan(&a.ArticleID, &a.UserID, &a.Title, &a.Body, &a.PublishedAt)
		a.PublishedAt = a.PublishedAt.UTC()
		return a, err
	})
	if err != nil {
		return s, err
	}
	for _, a := range arts {
		s.Articles[a.ArticleID] = a
	}
	return s, nil
}

// Diff describes how two states differ, at most max differences; "" when equal.
func Diff(want, got State, maxDiffs int) string {
	var out []string
	add := func(f string, a ...any) {
		if len(out) < maxDiffs {
			out = append(out, fmt.Sprintf(f, a...))
		}
	}
	if len(want.Users) != len(got.Users) {
		add("users: %d, want %d", len(got.Users), len(want.Users))
	}
	if len(want.Articles) != len(got.Articles) {
		add("articles: %d, want %d", len(got.Articles), len(want.Articles))
	}
	ids := make([]string, 0, len(want.Users))
	for id := range want.Users {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		w, g := want.Users[id], got.Users[id]
		if !sameUser(w, g) {
			add("user %s: got %+v, want %+v", id, g, w)
		}
	}
	for id := range got.Users {
		if _, ok := want.Users[id]; !ok {
			add("user %s should not exist", id)
		}
	}
	for id, w := range want.Articles {
		if g, ok := got.Articles[id]; !ok || g.UserID != w.UserID || g.Title != w.Title || g.Body != w.Body || !g.PublishedAt.Equal(w.PublishedAt) {
			add("article %s: got %+v, want %+v", id, got.Articles[id].ArticleID, w.ArticleID)
		}
	}
	for id := range got.Articles {
		if _, ok := want.Articles[id]; !ok {
			add("article %s should not exist", id)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return fmt.Sprint(out)
}

func sameUser(a, b User) bool {
	if a.UserID != b.UserID || a.Email != b.Email || a.Name != b.Name || a.ArticleCount != b.ArticleCount || !a.RegisteredAt.Equal(b.RegisteredAt) {
		return false
	}
	if (a.PasswordChangedAt == nil) != (b.PasswordChangedAt == nil) {
		return false
	}
	return a.PasswordChangedAt == nil || a.PasswordChangedAt.Equal(*b.PasswordChangedAt)
}
