// Package readmodel is the projection API: a projection's name, version, schema
// migrations and typed handlers, and the Writer on which handlers queue their
// statements.
//
// Handlers never hold a connection. They queue statements on a Writer; the runtime
// (package projector) sends one partition batch's statements in one round trip, then
// the batch's offsets, then commits — one transaction per partition batch. A handler
// that must read can (Writer.Query), at the cost of sending what is queued first.
//
// A projection's tables live in a PostgreSQL schema of their own, named after the
// projection and its version (users_v1), so a new version is built beside the old.
package readmodel
