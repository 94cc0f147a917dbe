// Package snapshot takes consistent snapshots of one projection version — its tables
// together with the offsets they correspond to — and restores them, so that a new
// deployment starts from a snapshot instead of replaying the whole log.
//
// A snapshot is taken in one REPEATABLE READ, READ ONLY transaction: every table and
// the stored offsets come from the same instant, whatever the workers commit
// meanwhile. Tables are written with PostgreSQL's binary COPY, one file each, with a
// SHA-256 per file; the manifest records the projection, version, schema hash, the
// next offset of every partition, row counts and a checksum over the files. The
// store built here is a folder (FolderStore); the Store interface is what an S3 or
// large-object store would implement.
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	framework "github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/readmodel"
)

// Manifest describes one snapshot.
type Manifest struct {
	ID         string        `json:"id"`
	Projection string        `json:"projection"`
	Version    int           `json:"version"`
	SchemaHash string        `json:"schema_hash"`
	Topic      string        `json:"topic"`
	Offsets    map[int]int64 `json:"offsets"` // next offset per partition
	Events     int64         `json:"events"`  // sum of the offsets: events the snapshot covers
	Tables     []Table       `json:"tables"`
	Checksum   string        `json:"checksum"` // SHA-256 over the tables' names and hashes
	CreatedAt  time.Time     `json:"created_at"`
	Bytes      int64         `json:"bytes"`
	// ScrubbedThrough: the snapshot was rewritten with every subject forgotten up to
	// this time purged (crypto-shredding); zero when never rewritten.
	ScrubbedThrough time.Time `json:"scrubbed_through,omitzero"`
	// Rewrites is the id of the snapshot this one replaced, if any.
	Rewrites string `json:"rewrites,omitempty"`
}

// Table is one file of a snapshot.
type Table struct {
	Name   string `json:"name"` // a projection table, or the framework's "_aggregates" / "_event_ids"
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Sentinel errors; restores wrap them with what differs.
var (
	ErrChecksum       = errors.New("snapshot checksum mismatch: the snapshot is corrupt")
	ErrSchemaMismatch = errors.New("snapshot schema does not match the projection's")
	ErrNotEmpty       = errors.New("target read model is not empty")
	ErrBelowLogStart  = errors.New("snapshot offsets are below the log start: the events after it are gone")
	ErrNotFound       = errors.New("snapshot not found")
)

// Store keeps snapshots.
type Store interface {
	// Write stores a snapshot: write is called once per file, then the manifest is
	// committed; a failed Write leaves nothing behind.
	Write(ctx context.Context, m *Manifest, files func(put func(name string, w func(io.Writer) error) error) error) error
	// List returns the manifests of a projection version, newest first.
	List(ctx context.Context, projection string, version int) ([]Manifest, error)
	// Open returns a manifest and a way to read its files.
	Open(ctx context.Context, projection string, version int, id string) (Manifest, func(name string) (io.ReadCloser, error), error)
	// Delete removes a snapshot.
	Delete(ctx context.Context, projection string, version int, id string) error
}

// Source says what to snapshot.
type Source struct {
	Pool       *pgxpool.Pool
	Schema     string // framework schema (offsets, aggregates); default readmodel.FrameworkSchemaDefault
	Projection *readmodel.Projection
	Topic      string
	// Progress, when set, is told of each table as it is written.
	Progress func(table string, rows, bytes int64, took time.Duration)
	// Rewrites, when set, makes this snapshot the rewrite of that one (same creation
	// time, a new id); ScrubbedThrough is recorded in the manifest.
	Rewrites        *Manifest
	ScrubbedThrough time.Time
}

func (s Source) fw() string {
	if s.Schema == "" {
		return readmodel.FrameworkSchemaDefault
	}
	return s.Schema
}

// Take snapshots the projection version in one REPEATABLE READ transaction.
func Take(ctx context.Context, src Source, store Store) (*Manifest, error) {
	tx, err := src.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("snapshot: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	p := src.Projection
	m := &Manifest{Projection: p.Name(), Version: p.Version(), SchemaHash: p.SchemaHash(), Topic: src.Topic,
		Offsets: map[int]int64{}, CreatedAt: time.Now().UTC()}
	m.Offsets, err = framework.Positions(ctx, tx, src.fw(), p.Name(), p.Version(), src.Topic)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	for _, next := range m.Offsets {
		m.Events += next
	}
	copies, err := snapshotCopies(ctx, tx, src)
	if err != nil {
		return nil, err
	}
	m.ID = fmt.Sprintf("%s-%012d", m.CreatedAt.Format("20060102T150405.000Z"), m.Events)
	m.ID = strings.ReplaceAll(m.ID, ".", "")
	if old := src.Rewrites; old != nil {
		base, _, _ := strings.Cut(old.ID, "-r")
		m.CreatedAt, m.Rewrites, m.ScrubbedThrough = old.CreatedAt, old.ID, src.ScrubbedThrough.UTC()
		m.ID = fmt.Sprintf("%s-r%d", base, time.Now().UnixNano())
	}
	names := make([]string, 0, len(copies))
	for n := range copies {
		names = append(names, n)
	}
	sort.Strings(names)
	err = store.Write(ctx, m, func(put func(string, func(io.Writer) error) error) error {
		for _, name := range names {
			var info Table
			info.Name = name
			began := time.Now()
			err := put(name, func(w io.Writer) error {
				h := sha256.New()
				cw := &countWriter{w: io.MultiWriter(w, h)}
				tag, err := tx.Conn().PgConn().CopyTo(ctx, cw, copies[name])
				if err != nil {
					return fmt.Errorf("copy %s: %w", name, err)
				}
				info.Rows, info.Bytes, info.SHA256 = tag.RowsAffected(), cw.n, hex.EncodeToString(h.Sum(nil))
				return nil
			})
			if err != nil {
				return err
			}
			m.Tables = append(m.Tables, info)
			m.Bytes += info.Bytes
			if src.Progress != nil {
				src.Progress(name, info.Rows, info.Bytes, time.Since(began))
			}
		}
		m.Checksum = checksum(m.Tables)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	// The transaction only read, and the snapshot is stored: how the transaction
	// ends (the deferred rollback) changes nothing. Its COMMIT used to be the last
	// step, and a stop cancelling ctx there (seen: "i/o timeout") reported a stored
	// snapshot as failed, so the policy did not prune after it, and the store kept one
	// more than Keep.
	return m, nil
}

// snapshotCopies returns the COPY statement of each file of a snapshot of src:
// one per table of the projection's schema, and the framework's rows of it.
func snapshotCopies(ctx context.Context, tx pgx.Tx, src Source) (map[string]string, error) {
	p := src.Projection
	rows, err := tx.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, p.Schema())
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	copies := map[string]string{}
	for _, t := range tables {
		copies[t] = `COPY ` + pgx.Identifier{p.Schema(), t}.Sanitize() + ` TO STDOUT (FORMAT binary)`
	}
	for name, sql := range framework.SnapshotCopies(src.fw(), p.Name(), p.Version()) {
		copies[name] = sql
	}
	return copies, nil
}

// checksum covers every table's name, row count and hash.
func checksum(tables []Table) string {
	h := sha256.New()
	for _, t := range tables {
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00%s\n", t.Name, t.Rows, t.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Target says where to restore.
type Target struct {
	Pool       *pgxpool.Pool
	Schema     string                // framework schema; default readmodel.FrameworkSchemaDefault
	Projection *readmodel.Projection // its migrations create the tables; its schema receives them
	Topic      string
	// LogStart, when set, returns each partition's first offset: a snapshot whose
	// offsets lie below it is refused (the events after it are gone).
	LogStart func(ctx context.Context) (map[int]int64, error)
	// Progress, when set, is told of each table as it is loaded.
	Progress func(table string, rows, bytes int64, took time.Duration)
}

// Verify checks a snapshot's files against its manifest and the projection's schema
// hash, reading every byte.
func Verify(ctx context.Context, store Store, p *readmodel.Projection, id string) (Manifest, error) {
	m, open, err := verifyManifest(ctx, store, p, id)
	if err != nil {
		return m, err
	}
	for _, t := range m.Tables {
		r, err := open(t.Name)
		if err != nil {
			return m, fmt.Errorf("snapshot %s: %w: file %s: %w", id, ErrChecksum, t.Name, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, r)
		_ = r.Close()
		if err != nil {
			return m, fmt.Errorf("snapshot %s: read %s: %w", id, t.Name, err)
		}
		if err := checkFile(id, t, h); err != nil {
			return m, err
		}
	}
	return m, nil
}

// verifyManifest opens a snapshot and checks its manifest: the schema hash against
// the projection's and the table list against its checksum.
func verifyManifest(ctx context.Context, store Store, p *readmodel.Projection, id string) (Manifest, func(string) (io.ReadCloser, error), error) {
	m, open, err := store.Open(ctx, p.Name(), p.Version(), id)
	if err != nil {
		return m, nil, err
	}
	if m.SchemaHash != p.SchemaHash() {
		return m, nil, fmt.Errorf("snapshot %s: %w: it was taken with schema hash %.12s…, this build of %s_v%d has %.12s… (its migrations differ)",
			id, ErrSchemaMismatch, m.SchemaHash, p.Name(), p.Version(), p.SchemaHash())
	}
	if checksum(m.Tables) != m.Checksum {
		return m, nil, fmt.Errorf("snapshot %s: %w: the manifest's table list does not match its checksum", id, ErrChecksum)
	}
	return m, open, nil
}

// checkFile compares the SHA-256 of a file's bytes, summed in h, with the manifest's.
func checkFile(id string, t Table, h hash.Hash) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != t.SHA256 {
		return fmt.Errorf("snapshot %s: %w: table %s has SHA-256 %.12s…, the manifest says %.12s…", id, ErrChecksum, t.Name, got, t.SHA256)
	}
	return nil
}

// Latest returns the newest snapshot's id, or ErrNotFound.
func Latest(ctx context.Context, store Store, p *readmodel.Projection) (string, error) {
	ms, err := store.List(ctx, p.Name(), p.Version())
	if err != nil {
		return "", err
	}
	if len(ms) == 0 {
		return "", fmt.Errorf("snapshot: %w for %s_v%d", ErrNotFound, p.Name(), p.Version())
	}
	return ms[0].ID, nil
}

// Restore verifies a snapshot and loads it into an empty target: the projection's
// migrations create its tables, the files fill them, and the framework's offsets and
// sequence marks are set, all in one transaction. Consuming then resumes at the
// snapshot's offsets.
//
// A store that is a Locker is read under its shared lock: a rewrite of the snapshot
// (which deletes it) waits until the restore is done, and a restore waits for a
// rewrite in progress, then finds the snapshot under its new id or ErrNotFound
// (RestoreNewest looks again).
func Restore(ctx context.Context, store Store, id string, dst Target) (Manifest, error) {
	p := dst.Projection
	unlock, err := rlock(ctx, store, p.Name(), p.Version())
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	// The files are checked as they are copied (restoreFiles), not read twice: a
	// file whose bytes are not the manifest's rolls the restore back.
	m, _, err := verifyManifest(ctx, store, p, id)
	if err != nil {
		return m, err
	}
	if m.Topic != dst.Topic {
		return m, fmt.Errorf("snapshot %s was taken from topic %s, not %s", id, m.Topic, dst.Topic)
	}
	if err := checkLogStart(ctx, id, m, dst); err != nil {
		return m, err
	}
	fwName := dst.Schema
	if fwName == "" {
		fwName = readmodel.FrameworkSchemaDefault
	}
	// The framework's own tables must exist; the runtime creates them (projector.Runner.Setup).
	if err := readmodel.Setup(ctx, dst.Pool, fwName, p); err != nil {
		return m, err
	}
	_, open, err := store.Open(ctx, p.Name(), p.Version(), id)
	if err != nil {
		return m, err
	}
	tx, err := dst.Pool.Begin(ctx)
	if err != nil {
		return m, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Replicas bootstrapping together: one restores, the others find it not empty.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "projector:restore:"+fwName+":"+p.Schema()); err != nil {
		return m, err
	}
	if err := checkEmpty(ctx, tx, m, p, fwName); err != nil {
		return m, err
	}
	if err := restoreFiles(ctx, tx, id, m, open, dst, fwName); err != nil {
		return m, err
	}
	if err := framework.RestorePositions(ctx, tx, fwName, p.Name(), p.Version(), dst.Topic, m.Offsets); err != nil {
		return m, err
	}
	// Sequences behind serial columns continue after the restored rows.
	if _, err := tx.Exec(ctx, `DO $$ DECLARE r record; BEGIN
		FOR r IN SELECT s.relname AS seq, t.relname AS tbl, a.attname AS col
		  FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')
		  JOIN pg_class t ON t.oid = d.refobjid JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
		  JOIN pg_namespace n ON n.oid = s.relnamespace
		 WHERE s.relkind = 'S' AND n.nspname = `+quoteLiteral(p.Schema())+` LOOP
		  EXECUTE format('SELECT setval(%L, coalesce((SELECT max(%I) FROM %I.%I), 0) + 1, false)',
		    format('%I.%I', `+quoteLiteral(p.Schema())+`, r.seq), r.col, `+quoteLiteral(p.Schema())+`, r.tbl);
		END LOOP; END $$`); err != nil {
		return m, fmt.Errorf("snapshot: reset sequences: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return m, err
	}
	// Statistics for the rows just copied in: without them the planner takes the
	// tables for empty, and the catch-up's statements scan them whole until
	// autovacuum comes by. The catch-up's lookups need the tables' sizes and their
	// index columns, analyzed coarsely; autovacuum analyzes the rest soon after
	// (store.Analyze).
	if _, err := framework.Analyze(ctx, dst.Pool, []string{p.Schema(), fwName}, 0, restoreAnalyzesAtOnce); err != nil {
		return m, fmt.Errorf("snapshot: restored, then: %w", err)
	}
	return m, nil
}

// restoreAnalyzesAtOnce is how many tables a restore analyzes at once once its rows
// are in: one at a time, the others waited behind the largest one's ANALYZE.
const restoreAnalyzesAtOnce = 3

// checkLogStart refuses a snapshot whose offsets lie below the log's start: the
// events between them and the start are gone, and the catch-up would skip them.
func checkLogStart(ctx context.Context, id string, m Manifest, dst Target) error {
	if dst.LogStart == nil {
		return nil
	}
	starts, err := dst.LogStart(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: log start: %w", err)
	}
	for part, next := range m.Offsets {
		if next < starts[part] {
			return fmt.Errorf("snapshot %s: %w: partition %d resumes at %d, the log now starts at %d", id, ErrBelowLogStart, part, next, starts[part])
		}
	}
	return nil
}

// checkEmpty refuses to restore over a read model: stored offsets, or a table of
// the snapshot's with rows.
func checkEmpty(ctx context.Context, tx pgx.Tx, m Manifest, p *readmodel.Projection, fwName string) error {
	stored, err := framework.HasPositions(ctx, tx, fwName, p.Name(), p.Version())
	if err != nil {
		return fmt.Errorf("snapshot: the framework's tables are missing (start the runtime's setup first): %w", err)
	}
	if stored {
		return fmt.Errorf("snapshot: %w: %s_v%d already has stored offsets in schema %s", ErrNotEmpty, p.Name(), p.Version(), fwName)
	}
	for _, t := range m.Tables {
		if framework.IsFrameworkFile(t.Name) {
			continue
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{p.Schema(), t.Name}.Sanitize()).Scan(&n); err != nil {
			return fmt.Errorf("snapshot: table %s: %w", t.Name, err)
		}
		if n > 0 {
			return fmt.Errorf("snapshot: %w: table %s.%s holds %d rows", ErrNotEmpty, p.Schema(), t.Name, n)
		}
	}
	return nil
}

// restoreFiles loads a snapshot's files: the projection's tables straight into their
// schema, parents before children, each with its indexes built after its rows
// (copyTable); the framework's rows through the store, staged and then written
// together.
func restoreFiles(ctx context.Context, tx pgx.Tx, id string, m Manifest, open func(string) (io.ReadCloser, error), dst Target, fwName string) error {
	p := dst.Projection
	// COPY FREEZE writes the rows frozen, with their hint bits set, so the catch-up's
	// first reads do not write every page again to set them. PostgreSQL allows it
	// only into a table created or truncated in the same transaction: the tables are
	// empty (checkEmpty), and one TRUNCATE of them all keeps their foreign keys
	// satisfied. A TRUNCATE refused (a table referenced from outside the snapshot)
	// rolls back to the savepoint, and the rows are copied without FREEZE.
	freeze := ""
	var tables []string
	for _, t := range m.Tables {
		if !framework.IsFrameworkFile(t.Name) {
			tables = append(tables, pgx.Identifier{p.Schema(), t.Name}.Sanitize())
		}
	}
	if len(tables) > 0 {
		if _, err := tx.Exec(ctx, `SAVEPOINT restore_truncate; TRUNCATE `+strings.Join(tables, ", ")); err == nil {
			freeze = ", FREEZE"
		} else if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT restore_truncate`); rerr != nil {
			return fmt.Errorf("restore: truncate: %w (then: %w)", err, rerr)
		}
	}
	order, err := loadOrder(ctx, tx, p.Schema(), m.Tables)
	if err != nil {
		return err
	}
	fw := framework.NewRestore(tx, fwName)
	for _, t := range order {
		began := time.Now()
		f, err := open(t.Name)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w: file %s: %w", id, ErrChecksum, t.Name, err)
		}
		h := sha256.New()
		r := io.TeeReader(f, h)
		if framework.IsFrameworkFile(t.Name) {
			err = fw.File(ctx, t.Name, r)
		} else {
			err = copyTable(ctx, tx, pgx.Identifier{p.Schema(), t.Name}.Sanitize(), freeze, r)
		}
		var pgErr *pgconn.PgError
		if err != nil && errors.As(err, &pgErr) && ctx.Err() == nil {
			// A file PostgreSQL refused may be a damaged one: the checksum says. (Only
			// then: after a lost connection or a cancel, the COPY's reader may still
			// be reading the file.)
			_, _ = io.Copy(h, f)
		}
		_ = f.Close()
		if err != nil && pgErr == nil {
			return err // a lost connection, a cancel, a read error: not the file's bytes
		}
		if cerr := checkFile(id, t, h); cerr != nil {
			if err != nil {
				return fmt.Errorf("%w (restoring it: %w)", cerr, err)
			}
			return cerr
		}
		if err != nil {
			return err
		}
		if dst.Progress != nil {
			dst.Progress(t.Name, t.Rows, t.Bytes, time.Since(began))
		}
	}
	return fw.Finish(ctx, p.Name(), p.Version())
}

// copyTable copies r's rows into table, its indexes dropped for the COPY and built
// again after it (see dropIndexes).
func copyTable(ctx context.Context, tx pgx.Tx, table, freeze string, r io.Reader) error {
	ixs, err := dropIndexes(ctx, tx, table)
	if err != nil {
		return err
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, r, `COPY `+table+` FROM STDIN (FORMAT binary`+freeze+`)`); err != nil {
		return fmt.Errorf("restore %s: %w", table, err)
	}
	return buildIndexes(ctx, tx, table, ixs)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// loadOrder returns tables in an order that copies each table after the tables its
// foreign keys reference (within schema), so that every row copied finds its
// parent; tables in a cycle of foreign keys keep the manifest's order among
// themselves (their constraints must then be deferrable).
func loadOrder(ctx context.Context, tx pgx.Tx, schema string, tables []Table) ([]Table, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname, r.relname FROM pg_constraint k
		JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_namespace rn ON rn.oid = r.relnamespace
		WHERE k.contype = 'f' AND n.nspname = $1 AND rn.nspname = $1 AND c.oid <> r.oid`, schema)
	if err != nil {
		return nil, fmt.Errorf("restore: foreign keys: %w", err)
	}
	parents := map[string][]string{}
	for rows.Next() {
		var child, parent string
		if err := rows.Scan(&child, &parent); err != nil {
			rows.Close()
			return nil, fmt.Errorf("restore: foreign keys: %w", err)
		}
		parents[child] = append(parents[child], parent)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("restore: foreign keys: %w", err)
	}
	out := make([]Table, 0, len(tables))
	state := map[string]int{} // 1 visiting, 2 done
	byName := map[string]Table{}
	for _, t := range tables {
		byName[t.Name] = t
	}
	var visit func(t Table)
	visit = func(t Table) {
		if state[t.Name] != 0 {
			return // done, or a cycle: manifest order
		}
		state[t.Name] = 1
		for _, p := range parents[t.Name] {
			if pt, ok := byName[p]; ok {
				visit(pt)
			}
		}
		state[t.Name] = 2
		out = append(out, t)
	}
	for _, t := range tables {
		visit(t)
	}
	return out, nil
}
