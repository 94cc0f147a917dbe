package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// What a snapshot carries of the framework's rows, file by file (package snapshot
// writes and reads the files; the store says what is in them).
const (
	// FileAggregates: each aggregate's sequence mark.
	FileAggregates = "_aggregates"
	// FileRecent: each aggregate's dedupe window, so that a restored read model still
	// recognises a late copy of a recent event, as a full replay would. Absent from
	// snapshots taken before it existed.
	FileRecent = "_recent"
	// FileEventIDs: ids of applied events without a sequence.
	FileEventIDs = "_event_ids"
	// FileParked: open parked events. A restored read model must park later events of
	// their aggregates, as a full replay would, and an operator can still retry them.
	FileParked = "_parked"
)

// parkedColumns are the parked events' columns a snapshot carries.
const parkedColumns = `topic, partition, "offset", subject, event_id, event_type, error, behind, attempts, state, parked_at, updated_at, msg_key, msg_value, msg_headers`

// IsFrameworkFile reports whether a snapshot file holds framework rows (its name
// starts with "_"), not a projection table.
func IsFrameworkFile(name string) bool { return strings.HasPrefix(name, "_") }

// SnapshotCopies returns, by file name, the COPY … TO STDOUT statements that export
// one projection version's framework rows, in binary format, ordered so that the
// same rows give the same bytes.
func SnapshotCopies(schema, projection string, version int) map[string]string {
	q := pgx.Identifier{schema}.Sanitize()
	where := ` WHERE projection = ` + quote(projection) + ` AND version = ` + fmt.Sprint(version)
	bin := ` TO STDOUT (FORMAT binary)`
	return map[string]string{
		FileAggregates: `COPY (SELECT subject, last_sequence, last_event_id FROM ` + q + `.aggregates` + where + ` ORDER BY subject)` + bin,
		FileRecent:     `COPY (SELECT subject, recent FROM ` + q + `.aggregates` + where + ` ORDER BY subject)` + bin,
		FileEventIDs:   `COPY (SELECT event_id FROM ` + q + `.event_ids` + where + ` ORDER BY event_id)` + bin,
		FileParked: `COPY (SELECT ` + parkedColumns + ` FROM ` + q + `.parked` + where +
			` AND state <> 'resolved' ORDER BY topic, partition, "offset")` + bin,
	}
}

// staging are, per framework file, the staging table a restore copies it into.
func staging(q string) map[string]string {
	return map[string]string{
		FileAggregates: `CREATE TEMP TABLE restore_aggregates (subject text, last_sequence bigint, last_event_id text) ON COMMIT DROP`,
		FileRecent:     `CREATE TEMP TABLE restore_recent (subject text, recent bytea) ON COMMIT DROP`,
		FileEventIDs:   `CREATE TEMP TABLE restore_event_ids (event_id text) ON COMMIT DROP`,
		FileParked:     `CREATE TEMP TABLE restore_parked ON COMMIT DROP AS SELECT ` + parkedColumns + ` FROM ` + q + `.parked WITH NO DATA`,
	}
}

// Restore loads a snapshot's framework files into a transaction: each file into a
// staging table of its own (File), then all of them into the framework's tables
// (Finish). The marks and their windows come in two files and go in by one INSERT
// that joins them: written by an INSERT and then an UPDATE, each mark was written
// twice, which took a third of a bootstrap's restore of the marks.
type Restore struct {
	tx     pgx.Tx
	q      string
	staged map[string]bool
}

// NewRestore starts loading framework files into tx, for the framework schema schema.
func NewRestore(tx pgx.Tx, schema string) *Restore {
	return &Restore{tx: tx, q: pgx.Identifier{schema}.Sanitize(), staged: map[string]bool{}}
}

// File copies one framework file of a snapshot into its staging table. An unknown
// framework file is an error: a snapshot from a newer build.
func (r *Restore) File(ctx context.Context, name string, rd io.Reader) error {
	create, ok := staging(r.q)[name]
	if !ok {
		return fmt.Errorf("store: snapshot file %s is unknown to this build", name)
	}
	if r.staged[name] {
		return fmt.Errorf("store: snapshot file %s given twice", name)
	}
	if _, err := r.tx.Exec(ctx, create); err != nil {
		return fmt.Errorf("store: restore %s: %w", name, err)
	}
	table := strings.Fields(create)[3] // CREATE TEMP TABLE <name>
	if _, err := r.tx.Conn().PgConn().CopyFrom(ctx, rd, `COPY `+table+` FROM STDIN (FORMAT binary)`); err != nil {
		return fmt.Errorf("store: restore %s: %w", name, err)
	}
	r.staged[name] = true
	return nil
}

// Finish writes the staged files' rows into the framework's tables, as projection
// version's.
//
// The marks go in in subject order, which fills the primary key's pages one after
// another, by a plain INSERT when the projection version has none yet (a restore
// into a new database: the usual case), and by an upsert over stale ones otherwise.
// The staging tables are analyzed first, so that the join of marks and windows is
// planned for their real size (as never-analyzed temporary tables it was planned
// for a guess, and sorted on disk), with the work memory to do it in memory (at
// least 64 MB, for the rest of the restore's transaction). Measured in psql on 37,000 marks with windows:
// the upsert in the join's order took 0.68–0.76 s, the plain INSERT in subject
// order 0.33–0.36 s. The plan needs their sizes, which any ANALYZE sets, and
// their columns' statistics only coarsely: they are analyzed at a tenth of the
// default target (a sample of 3,000 rows, not 30,000). On the bench's 37,000 marks
// the two analyses took 76 ms each in the restore at the default target, and 10 ms
// for the windows' table at a tenth (its subjects only), for the same plan (a hash
// join, then a sort in memory).
func (r *Restore) Finish(ctx context.Context, projection string, version int) error {
	var steps []string
	if r.staged[FileAggregates] {
		prepare := []string{`SELECT set_config('work_mem', '64MB', true) WHERE pg_size_bytes(current_setting('work_mem')) < 64 * 1024 * 1024`,
			stagingAnalyze("restore_aggregates", "subject", "last_sequence", "last_event_id")}
		if r.staged[FileRecent] {
			prepare = append(prepare, stagingAnalyze("restore_recent", "subject", "recent"))
		}
		for _, sql := range prepare {
			if _, err := r.tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("store: restore the framework's rows: %w", err)
			}
		}
		var stale bool
		if err := r.tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM `+r.q+`.aggregates WHERE projection = $1 AND version = $2)`,
			projection, version).Scan(&stale); err != nil {
			return fmt.Errorf("store: restore the framework's rows: %w", err)
		}
		// A mark without a window (a snapshot from before the windows) gets the
		// column's empty one, as its INSERT alone gave it.
		recent, set := `'\x'::bytea`, ``
		from := `restore_aggregates a`
		if r.staged[FileRecent] {
			recent, set = `coalesce(w.recent, '\x'::bytea)`, `, recent = EXCLUDED.recent`
			from += ` LEFT JOIN restore_recent w USING (subject)`
		}
		upsert := ``
		if stale {
			upsert = ` ON CONFLICT (projection, version, subject) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, last_event_id = EXCLUDED.last_event_id` + set
		}
		steps = append(steps, `INSERT INTO `+r.q+`.aggregates (projection, version, subject, last_sequence, last_event_id, recent)
			 SELECT $1, $2, a.subject, a.last_sequence, a.last_event_id, `+recent+` FROM `+from+` ORDER BY a.subject`+upsert)
	}
	if r.staged[FileEventIDs] {
		steps = append(steps, `INSERT INTO `+r.q+`.event_ids (projection, version, event_id)
			 SELECT $1, $2, event_id FROM restore_event_ids ON CONFLICT DO NOTHING`)
	}
	if r.staged[FileParked] {
		steps = append(steps, `INSERT INTO `+r.q+`.parked (projection, version, `+parkedColumns+`)
			 SELECT $1, $2, `+parkedColumns+` FROM restore_parked ON CONFLICT DO NOTHING`)
	}
	for _, sql := range steps {
		if _, err := r.tx.Exec(ctx, sql, projection, version); err != nil {
			if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.TableName == "aggregates" {
				return fmt.Errorf("store: restore the framework's rows: a mark of %s v%d is there twice (another transaction wrote marks during the restore, or the snapshot's marks file repeats a subject): %w", projection, version, err)
			}
			return fmt.Errorf("store: restore the framework's rows: %w", err)
		}
	}
	return nil
}

// stagingAnalyze is the analysis of a staging table that Finish plans its join on:
// its size, and its columns at lookupStatisticsTarget (the widths of the rows the
// join hashes and sorts, and the subjects it joins on).
func stagingAnalyze(table string, columns ...string) string {
	var b strings.Builder
	for _, c := range columns {
		fmt.Fprintf(&b, `ALTER TABLE %s ALTER COLUMN %s SET STATISTICS %d; `, table, c, lookupStatisticsTarget)
	}
	fmt.Fprintf(&b, `ANALYZE %s (%s)`, table, strings.Join(columns, ", "))
	return b.String()
}

// Positions returns a projection version's stored read-model positions on topic,
// by partition, as tx sees them.
func Positions(ctx context.Context, tx pgx.Tx, schema, projection string, version int, topic string) (map[int]int64, error) {
	rows, err := tx.Query(ctx, `SELECT partition, next_offset FROM `+table(schema, tableOffsets)+`
		WHERE projection = $1 AND version = $2 AND topic = $3`, projection, version, topic)
	if err != nil {
		return nil, fmt.Errorf("store: positions: %w", err)
	}
	out := map[int]int64{}
	defer rows.Close()
	for rows.Next() {
		var part int
		var next int64
		if err := rows.Scan(&part, &next); err != nil {
			return nil, err
		}
		out[part] = next
	}
	return out, rows.Err()
}

// HasPositions reports whether a projection version has applied anything (a stored
// position past zero): a snapshot is restored only into an empty one.
func HasPositions(ctx context.Context, tx pgx.Tx, schema, projection string, version int) (bool, error) {
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM `+table(schema, tableOffsets)+`
		WHERE projection = $1 AND version = $2 AND next_offset > 0`, projection, version).Scan(&n)
	return n > 0, err
}

// RestorePositions stores a restored projection version's positions on topic: no
// owner yet (generation -1), so that the first claim takes them.
func RestorePositions(ctx context.Context, tx pgx.Tx, schema, projection string, version int, topic string, next map[int]int64) error {
	q := table(schema, tableOffsets)
	for part, n := range next {
		if _, err := tx.Exec(ctx, `INSERT INTO `+q+` (projection, version, topic, partition, next_offset, generation, member, consumed)
			VALUES ($1, $2, $3, $4, $5, -1, '', $5)
			ON CONFLICT (projection, version, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, consumed = EXCLUDED.consumed`,
			projection, version, topic, part, n); err != nil {
			return fmt.Errorf("store: restore positions: %w", err)
		}
	}
	return nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
