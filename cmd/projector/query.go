package main

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/service"
)

// queries answers the example's query routes from the read model's versioned schema.
type queries struct {
	pool   *pgxpool.Pool
	schema string // quoted
}

func (a queries) user(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var u domain.User
	err := a.pool.QueryRow(r.Context(), `SELECT user_id, email, name, registered_at, password_changed_at, article_count
		FROM `+a.schema+`.users WHERE user_id = $1`, id).Scan(&u.UserID, &u.Email, &u.Name, &u.RegisteredAt, &u.PasswordChangedAt, &u.ArticleCount)
	if errors.Is(err, pgx.ErrNoRows) {
		service.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "no user " + id})
		return
	}
	if err != nil {
		service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	rows, err := a.pool.Query(r.Context(), `SELECT article_id, user_id, title, published_at FROM `+a.schema+`.articles
		WHERE user_id = $1 ORDER BY published_at, article_id`, id)
	if err != nil {
		service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	arts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Article, error) {
		var a domain.Article
		return a, row.Scan(&a.ArticleID, &a.UserID, &a.Title, &a.PublishedAt)
	})
	if err != nil {
		service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"user": u, "articles": arts})
}

func (a queries) users(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			service.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "limit: want 1 to 1000"})
			return
		}
		limit = n
	}
	rows, err := a.pool.Query(r.Context(), `SELECT user_id, email, name, registered_at, password_changed_at, article_count
		FROM `+a.schema+`.users WHERE user_id > $1 ORDER BY user_id LIMIT $2`, r.URL.Query().Get("after"), limit)
	if err != nil {
		service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	us, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.User, error) {
		var u domain.User
		return u, row.Scan(&u.UserID, &u.Email, &u.Name, &u.RegisteredAt, &u.PasswordChangedAt, &u.ArticleCount)
	})
	if err != nil {
		service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"users": us})
}

func (a queries) stats(w http.ResponseWriter, r *http.Request) {
	var users, articles int64
	err := a.pool.QueryRow(r.Context(), `SELECT (SELECT count(*) FROM `+a.schema+`.users), (SELECT count(*) FROM `+a.schema+`.articles)`).Scan(&users, &articles)
	if err != nil {
		service.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]int64{"users": users, "articles": articles})
}
