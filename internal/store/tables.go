package store

import "github.com/jackc/pgx/v5"

// Tables holds the quoted, schema-qualified names of the framework's tables in one
// framework schema: the one place outside migrations/ that names them. Code that
// queries a framework table asks for its name here, so that a renamed or split
// table is one change in this package.
type Tables struct {
	Schema         string // the framework schema, quoted
	Offsets        string // the read model's position per partition
	EffectOffsets  string // each effect's watermark per partition
	Aggregates     string // the last applied sequence and its window per aggregate
	EventIDs       string // ids of applied events that carry no sequence
	Parked         string // parked events
	ParkedEffects  string // parked effect runs
	EffectStarts   string // when each effect started on each partition: its horizon
	ActiveVersions string // the version the stable views point at, per projection
	Migrations     string // each projection version's applied migrations
}

// TablesIn returns the names of the framework's tables in schema.
func TablesIn(schema string) Tables {
	q := func(t string) string { return pgx.Identifier{schema, t}.Sanitize() }
	return Tables{
		Schema: pgx.Identifier{schema}.Sanitize(), Offsets: q("offsets"), EffectOffsets: q("effect_offsets"),
		Aggregates: q("aggregates"), EventIDs: q("event_ids"), Parked: q("parked"), ParkedEffects: q("parked_effects"),
		EffectStarts: q("effect_starts"), ActiveVersions: q("active_versions"), Migrations: q("migrations"),
	}
}
