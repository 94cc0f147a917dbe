// Package readmodel is the projection API: a projection's name, version, schema and
// typed handlers, and the PostgreSQL writer on which handlers queue their statements.
//
// Not built yet: see issue 4 ("The projector runtime").
package readmodel
