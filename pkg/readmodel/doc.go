// Package readmodel is the projection API: a projection's name, version, schema
// migrations and typed handlers, and the Writer on which handlers queue their
// statements.
//
// Handlers never hold a connection. They change rows of a Table in memory — Get,
// Put, Update, Delete, DeleteWhere, by primary key — and the runtime (package
// projector), per partition batch, loads the keys the handlers declared (Loads) with
// one query per table, and at commit writes each table once, in primary-key order
// (the rows loaded back where they were read, by ctid; the others by one unnest
// upsert, or the new ones by COPY), with the batch's offsets, in one transaction. Loading locks the rows in key order, so partitions that share rows
// take turns instead of deadlocking or losing updates.
//
// Writer.Exec queues a statement instead: the slow path, for SQL a Table cannot
// say. From a handler it is a barrier for the rows in memory (see Writer). A
// handler that must read can (Writer.Query), at the cost of sending what is queued
// first.
//
// A projection's tables live in a PostgreSQL schema of their own, named after the
// projection and its version (users_v1), so a new version is built beside the old.
package readmodel
