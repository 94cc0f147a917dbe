// Package domain is the example domain from the founding article — users who
// register, change passwords, publish and delete articles, and are deleted — used by
// the demo, the tests and the benchmarks, with a deterministic workload generator.
//
// Every event's subject is the user id: a user's articles belong to the user's
// aggregate, so all of one user's events are in one partition, in order.
package domain

import (
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// Source is the CloudEvents source of the example domain's events.
const Source = "example-users"

// Event type names.
const (
	TypeUserRegistered         = "UserRegistered"
	TypeUserChangedPassword    = "UserChangedPassword"
	TypeUserPublishedAnArticle = "UserPublishedAnArticle"
	TypeArticleDeleted         = "ArticleDeleted"
	TypeUserDeleted            = "UserDeleted"
)

// UserRegistered is the event: a user signed up. The welcome email reacts to it.
type UserRegistered struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
}

// UserChangedPassword is the event: a user set a new password (only its hash travels).
type UserChangedPassword struct {
	UserID       string `json:"user_id"`
	PasswordHash string `json:"password_hash"`
}

// UserPublishedAnArticle is the event: a user published an article.
type UserPublishedAnArticle struct {
	UserID    string `json:"user_id"`
	ArticleID string `json:"article_id"`
	Title     string `json:"title"`
	Body      string `json:"body"`
}

// ArticleDeleted is the event: a user's article was deleted.
type ArticleDeleted struct {
	UserID    string `json:"user_id"`
	ArticleID string `json:"article_id"`
}

// UserDeleted is the event: a user closed their account.
type UserDeleted struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason,omitempty"`
}

// Registry returns a registry holding the example domain's event types.
func Registry() *events.Registry {
	r := events.NewRegistry()
	// A user's email and name are personal: encrypted under the user's key on
	// publish (package shred), redacted once the user is forgotten.
	events.Register[UserRegistered](r, TypeUserRegistered, events.WithPersonalData("user_id", "email", "name"))
	events.Register[UserChangedPassword](r, TypeUserChangedPassword)
	events.Register[UserPublishedAnArticle](r, TypeUserPublishedAnArticle)
	events.Register[ArticleDeleted](r, TypeArticleDeleted)
	events.Register[UserDeleted](r, TypeUserDeleted)
	shred.Register(r)
	return r
}
