package projector

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/projector/projector/pkg/offsets"
)

// tables holds the quoted names of the runtime's tables in the framework schema.
type tables struct {
	schema     string
	aggregates string // last applied sequence per aggregate
	eventIDs   string // ids of applied events that carry no sequence
	parked     string // parked events

	effectStarts  string // when each effect started on each partition: its horizon
	parkedEffects string // parked effect runs
}

func newTables(schema string) tables {
	q := func(t string) string { return pgx.Identifier{schema, t}.Sanitize() }
	return tables{schema: pgx.Identifier{schema}.Sanitize(), aggregates: q("aggregates"), eventIDs: q("event_ids"), parked: q("parked"),
		effectStarts: q("effect_starts"), parkedEffects: q("parked_effects")}
}

func (t tables) setup(ctx context.Context, pool offsets.Execer) error {
	for _, s := range []string{
		`CREATE SCHEMA IF NOT EXISTS ` + t.schema,
		`CREATE TABLE IF NOT EXISTS ` + t.aggregates + ` (
			projection    text   NOT NULL,
			version       int    NOT NULL,
			subject       text   NOT NULL,
			last_sequence bigint NOT NULL,
			last_event_id text   NOT NULL,
			PRIMARY KEY (projection, version, subject))`,
		// The ids of the aggregate's last applied events (at most dedupeWindow, oldest
		// first): the proof that a late copy of one of them is a duplicate.
		`ALTER TABLE ` + t.aggregates + ` ADD COLUMN IF NOT EXISTS recent_ids jsonb NOT NULL DEFAULT '[]'`,
		`CREATE TABLE IF NOT EXISTS ` + t.eventIDs + ` (
			projection text NOT NULL,
			version    int  NOT NULL,
			event_id   text NOT NULL,
			PRIMARY KEY (projection, version, event_id))`,
		`CREATE TABLE IF NOT EXISTS ` + t.parked + ` (
			id          bigserial PRIMARY KEY,
			projection  text   NOT NULL,
			version     int    NOT NULL,
			topic       text   NOT NULL,
			partition   int    NOT NULL,
			"offset"    bigint NOT NULL,
			subject     text   NOT NULL,
			event_id    text   NOT NULL,
			event_type  text   NOT NULL,
			error       text   NOT NULL,
			behind      bigint,                     -- offset of the event it waits behind, if any
			attempts    int    NOT NULL DEFAULT 1,
			state       text   NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'retry', 'skip', 'resolved')),
			parked_at   timestamptz NOT NULL DEFAULT now(),
			updated_at  timestamptz NOT NULL DEFAULT now(),
			msg_key     bytea,
			msg_value   bytea,
			msg_headers jsonb,
			UNIQUE (projection, version, topic, partition, "offset"))`,
		// holds: later events of the aggregate wait behind this one. An event whose
		// sequence the aggregate has passed (stale, a conflict) parks without holding.
		`ALTER TABLE ` + t.parked + ` ADD COLUMN IF NOT EXISTS holds boolean NOT NULL DEFAULT true`,
		`CREATE INDEX IF NOT EXISTS parked_open ON ` + t.parked + ` (projection, version, topic, partition, state) WHERE state <> 'resolved'`,
		`CREATE TABLE IF NOT EXISTS ` + t.effectStarts + ` (
			effect       text NOT NULL,
			projection   text NOT NULL,
			version      int  NOT NULL,
			topic        text NOT NULL,
			partition    int  NOT NULL,
			horizon_from timestamptz NOT NULL,         -- events older than this never fire
			started_at   timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (effect, projection, version, topic, partition))`,
		// The horizon the start was counted back with: a runner with another one moves it.
		`ALTER TABLE ` + t.effectStarts + ` ADD COLUMN IF NOT EXISTS horizon interval`,
		`CREATE TABLE IF NOT EXISTS ` + t.parkedEffects + ` (
			id              bigserial PRIMARY KEY,
			effect          text   NOT NULL,
			projection      text   NOT NULL,
			version         int    NOT NULL,
			topic           text   NOT NULL,
			partition       int    NOT NULL,
			"offset"        bigint NOT NULL,
			event_id        text   NOT NULL,
			event_type      text   NOT NULL,
			idempotency_key text   NOT NULL,
			error           text   NOT NULL,
			attempts        int    NOT NULL,
			state           text   NOT NULL DEFAULT 'parked' CHECK (state IN ('parked', 'retry', 'resolved')),
			parked_at       timestamptz NOT NULL DEFAULT now(),
			updated_at      timestamptz NOT NULL DEFAULT now(),
			msg_key         bytea,
			msg_value       bytea,
			msg_headers     jsonb,
			UNIQUE (effect, projection, version, topic, partition, "offset"))`,
	} {
		if _, err := pool.Exec(ctx, s); err != nil {
			return fmt.Errorf("projector: setup framework tables: %w", err)
		}
	}
	return nil
}
