package projector

import (
	"github.com/jackc/pgx/v5"
)

// tables holds the quoted names of the runtime's tables in the framework schema;
// package internal/store creates and migrates them.
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
