package shred

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MasterKeyEnv is the environment variable the commands read the master key from.
const MasterKeyEnv = "PROJECTOR_MASTER_KEY"

// SchemaDefault is the PostgreSQL schema of the key store unless configured.
const SchemaDefault = "projector_keys"

// CacheTTLDefault bounds how long a key fetched from the store is used without
// asking again: a key deleted by another process stops working here within it (the
// projector also evicts a subject the moment it reads its SubjectForgotten).
const CacheTTLDefault = time.Minute

// Master key errors, refused at start.
var (
	ErrNoMasterKey    = errors.New("no master key: set " + MasterKeyEnv + " (32 bytes, base64 or hex; make one with `producer keygen`)")
	ErrBadMasterKey   = errors.New("master key is not 32 bytes of base64 or hex")
	ErrWrongMasterKey = errors.New("master key does not open this key store: it was created with another master key")
)

// ParseMasterKey reads a master key: 32 bytes as base64 (standard or URL, padded or
// not) or as 64 hex digits.
func ParseMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, ErrNoMasterKey
	}
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, ErrBadMasterKey
}

// NewMasterKey returns a fresh random master key, base64.
func NewMasterKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// PGKeys is a KeyStore in PostgreSQL. Each data key is stored encrypted under the
// master key (envelope encryption, AES-256-GCM bound to the key's id and subject);
// deleting a key's row deletes it for good. Keys are cached in memory for CacheTTL;
// deleted ids are remembered (ids are random and never come back).
type PGKeys struct {
	pool   *pgxpool.Pool
	schema string
	master cipher.AEAD
	ttl    time.Duration

	mu     sync.Mutex
	byID   map[string]cached
	bySubj map[string]string // subject -> key id of byID
	gone   map[string]Key    // forgotten keys: ids are random and never come back
}

type cached struct {
	key     Key
	fetched time.Time
}

// PGOptions configures OpenPG.
type PGOptions struct {
	Schema   string        // default SchemaDefault
	CacheTTL time.Duration // default CacheTTLDefault; negative: no cache
}

const maxCached = 200_000

// OpenPG opens (creating on first use) the key store in pool under the master key.
// A master key of the wrong size is ErrBadMasterKey; one that did not create this
// store is ErrWrongMasterKey: both are refused here, at start, not at the first key.
func OpenPG(ctx context.Context, pool *pgxpool.Pool, masterKey []byte, o PGOptions) (*PGKeys, error) {
	if len(masterKey) == 0 {
		return nil, ErrNoMasterKey
	}
	if len(masterKey) != 32 {
		return nil, fmt.Errorf("%w (got %d bytes)", ErrBadMasterKey, len(masterKey))
	}
	master, err := newAEAD(masterKey)
	if err != nil {
		return nil, err
	}
	if o.Schema == "" {
		o.Schema = SchemaDefault
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = CacheTTLDefault
	}
	k := &PGKeys{pool: pool, schema: pgx.Identifier{o.Schema}.Sanitize(), master: master, ttl: o.CacheTTL,
		byID: map[string]cached{}, bySubj: map[string]string{}, gone: map[string]Key{}}
	if err := k.setup(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

var masterCheckAAD = []byte("projector/shred/master-check/v1")

func (k *PGKeys) setup(ctx context.Context) error {
	return pgx.BeginFunc(ctx, k.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('projector:shred:setup', 0))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+k.schema+`;
			CREATE TABLE IF NOT EXISTS `+k.schema+`.master (
				id int PRIMARY KEY CHECK (id = 1),
				check_value bytea NOT NULL,
				created_at timestamptz NOT NULL DEFAULT now());
			CREATE TABLE IF NOT EXISTS `+k.schema+`.data_keys (
				key_id text PRIMARY KEY,
				subject text NOT NULL UNIQUE,
				wrapped bytea NOT NULL,
				created_at timestamptz NOT NULL DEFAULT now());
			CREATE TABLE IF NOT EXISTS `+k.schema+`.forgotten_keys (
				key_id text PRIMARY KEY,
				subject text NOT NULL,
				forgotten_at timestamptz NOT NULL);
			CREATE TABLE IF NOT EXISTS `+k.schema+`.forgotten (
				subject text PRIMARY KEY,
				forgotten_at timestamptz NOT NULL,
				keys_deleted int NOT NULL);`)
		if err != nil {
			return fmt.Errorf("shred: set up the key store: %w", err)
		}
		var check []byte
		err = tx.QueryRow(ctx, `SELECT check_value FROM `+k.schema+`.master`).Scan(&check)
		if errors.Is(err, pgx.ErrNoRows) {
			nonce := make([]byte, k.master.NonceSize())
			_, _ = rand.Read(nonce)
			sealed := k.master.Seal(nonce, nonce, []byte("projector key store"), masterCheckAAD)
			_, err = tx.Exec(ctx, `INSERT INTO `+k.schema+`.master (id, check_value) VALUES (1, $1)`, sealed)
			return err
		}
		if err != nil {
			return err
		}
		if _, err := k.unseal(check, masterCheckAAD); err != nil {
			return ErrWrongMasterKey
		}
		return nil
	})
}

func (k *PGKeys) unseal(sealed, aad []byte) ([]byte, error) {
	ns := k.master.NonceSize()
	if len(sealed) < ns+k.master.Overhead() {
		return nil, ErrTampered
	}
	return k.master.Open(nil, sealed[:ns], sealed[ns:], aad)
}

func wrapAAD(id, subject string) []byte {
	return []byte("projector/shred/data-key/v1\x00" + id + "\x00" + subject)
}

func (k *PGKeys) unwrap(id, subject string, wrapped []byte) (Key, error) {
	secret, err := k.unseal(wrapped, wrapAAD(id, subject))
	if err != nil {
		return Key{}, fmt.Errorf("shred: data key %s does not open under the master key (tampered row or wrong master key): %w", id, ErrTampered)
	}
	return NewKey(id, subject, secret)
}

func (k *PGKeys) remember(key Key, now time.Time) {
	if k.ttl < 0 {
		return
	}
	if _, gone := k.gone[key.ID]; gone {
		return // forgotten while it was being fetched: never cache it again
	}
	if len(k.byID) >= maxCached {
		k.byID, k.bySubj = map[string]cached{}, map[string]string{}
	}
	k.byID[key.ID] = cached{key: key, fetched: now}
	k.bySubj[key.Subject] = key.ID
}

// DataKeys implements KeyStore.
func (k *PGKeys) DataKeys(ctx context.Context, subjects []string) (map[string]Key, error) {
	out := make(map[string]Key, len(subjects))
	now := time.Now()
	var missing []string
	seen := make(map[string]bool, len(subjects))
	k.mu.Lock()
	for _, s := range subjects {
		if c, ok := k.byID[k.bySubj[s]]; ok && c.key.Subject == s && now.Sub(c.fetched) < k.ttl {
			out[s] = c.key
		} else if !seen[s] {
			seen[s] = true
			missing = append(missing, s)
		}
	}
	k.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	slices.Sort(missing)
	ids := make([]string, len(missing))
	wrapped := make([][]byte, len(missing))
	for i, s := range missing {
		id := make([]byte, 16)
		secret := make([]byte, 32)
		_, _ = rand.Read(id)
		_, _ = rand.Read(secret)
		ids[i] = hex.EncodeToString(id)
		nonce := make([]byte, k.master.NonceSize())
		_, _ = rand.Read(nonce)
		wrapped[i] = k.master.Seal(nonce, nonce, secret, wrapAAD(ids[i], s))
	}
	found := map[string]Key{}
	err := pgx.BeginFunc(ctx, k.pool, func(tx pgx.Tx) error {
		// Per-subject locks, taken in order, serialise with Forget: a key is never
		// created for a subject being forgotten.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('projector:shred:' || s, 0)) FROM unnest($1::text[]) AS s ORDER BY s`, missing); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+k.schema+`.data_keys (subject, key_id, wrapped)
			SELECT w.subject, w.key_id, w.wrapped FROM unnest($1::text[], $2::text[], $3::bytea[]) AS w(subject, key_id, wrapped)
			WHERE NOT EXISTS (SELECT 1 FROM `+k.schema+`.forgotten f WHERE f.subject = w.subject)
			ON CONFLICT (subject) DO NOTHING`, missing, ids, wrapped); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT key_id, subject, wrapped FROM `+k.schema+`.data_keys WHERE subject = ANY($1)`, missing)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, subject string
			var w []byte
			if err := rows.Scan(&id, &subject, &w); err != nil {
				return err
			}
			key, err := k.unwrap(id, subject, w)
			if err != nil {
				return err
			}
			found[subject] = key
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("shred: data keys: %w", err)
	}
	k.mu.Lock()
	for s, key := range found {
		out[s] = key
		k.remember(key, now)
	}
	k.mu.Unlock()
	for _, s := range missing {
		if _, ok := out[s]; !ok {
			return nil, fmt.Errorf("shred: subject %q: %w", s, ErrSubjectForgotten)
		}
	}
	return out, nil
}

// Lookup implements KeyStore.
func (k *PGKeys) Lookup(ctx context.Context, ids []string) (map[string]Key, error) {
	out := make(map[string]Key, len(ids))
	now := time.Now()
	var missing []string
	seen := make(map[string]bool, len(ids))
	k.mu.Lock()
	for _, id := range ids {
		if c, ok := k.byID[id]; ok && now.Sub(c.fetched) < k.ttl {
			out[id] = c.key
		} else if g, ok := k.gone[id]; ok {
			out[id] = g
		} else if !seen[id] {
			seen[id] = true
			missing = append(missing, id)
		}
	}
	k.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := k.pool.Query(ctx, `SELECT key_id, subject, wrapped FROM `+k.schema+`.data_keys WHERE key_id = ANY($1)
		UNION ALL SELECT key_id, subject, NULL FROM `+k.schema+`.forgotten_keys WHERE key_id = ANY($1)`, missing)
	if err != nil {
		return nil, fmt.Errorf("shred: look up keys: %w", err)
	}
	found := map[string]Key{}
	for rows.Next() {
		var id, subject string
		var w []byte
		if err := rows.Scan(&id, &subject, &w); err != nil {
			rows.Close()
			return nil, err
		}
		if w == nil {
			found[id] = Key{ID: id, Subject: subject, Forgotten: true}
			continue
		}
		key, err := k.unwrap(id, subject, w)
		if err != nil {
			// One bad row must not stop every reader: its events fail to open,
			// each naming the key, and the rest go on. Not cached.
			found[id] = Key{ID: id, Subject: subject, broken: err}
			continue
		}
		found[id] = key
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("shred: look up keys: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, id := range missing {
		key, ok := found[id]
		switch {
		case !ok: // unknown here: left out, and not cached (a configuration may change)
		case key.Forgotten:
			out[id] = key
			if len(k.gone) >= maxCached {
				k.gone = map[string]Key{}
			}
			k.gone[id] = key
		case key.broken != nil:
			out[id] = key
		default:
			out[id] = key
			k.remember(key, now)
		}
	}
	return out, nil
}

// Forget implements KeyStore: the subject's keys are deleted and the forgetting
// recorded (subject id and time; never any personal data). Forgetting again deletes
// whatever key was made since and keeps the first time.
func (k *PGKeys) Forget(ctx context.Context, subject string) (Forgetting, error) {
	if strings.TrimSpace(subject) == "" {
		return Forgetting{}, errors.New("shred: forget: empty subject")
	}
	var f Forgetting
	var ids []string
	err := pgx.BeginFunc(ctx, k.pool, func(tx pgx.Tx) error {
		// Forgettings are serialised (they are rare), so their times are in commit
		// order: a scrub that covered "everything forgotten through T" never misses
		// one that commits later with an earlier time.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('projector:shred:forget', 0))`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('projector:shred:' || $1::text, 0))`, subject); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `WITH d AS (DELETE FROM `+k.schema+`.data_keys WHERE subject = $1 RETURNING key_id, subject)
			INSERT INTO `+k.schema+`.forgotten_keys (key_id, subject, forgotten_at) SELECT key_id, subject, clock_timestamp() FROM d
			ON CONFLICT (key_id) DO NOTHING RETURNING key_id`, subject)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO `+k.schema+`.forgotten (subject, forgotten_at, keys_deleted) VALUES ($1, clock_timestamp(), $2)
			ON CONFLICT (subject) DO UPDATE SET keys_deleted = forgotten.keys_deleted + EXCLUDED.keys_deleted
			RETURNING subject, forgotten_at, keys_deleted`, subject, len(ids)).Scan(&f.Subject, &f.At, &f.Keys)
	})
	if err != nil {
		return Forgetting{}, fmt.Errorf("shred: forget %q: %w", subject, err)
	}
	k.mu.Lock()
	for _, id := range ids {
		k.gone[id] = Key{ID: id, Subject: subject, Forgotten: true}
		delete(k.byID, id)
	}
	k.mu.Unlock()
	k.Evict(subject)
	f.At = f.At.UTC()
	return f, nil
}

// Forgotten implements KeyStore.
func (k *PGKeys) Forgotten(ctx context.Context, since time.Time) ([]Forgetting, error) {
	return forgotten(ctx, k.pool, k.schema, since)
}

// PGForgotten reads the forgettings recorded in a PGKeys store — subject ids and
// times, never a key — without the master key: what a report (which snapshots may
// still hold a forgotten subject's data) needs, and nothing more. A store not set up
// yet has forgotten no one.
type PGForgotten struct {
	Pool   *pgxpool.Pool
	Schema string // default SchemaDefault
}

// Forgotten lists the subjects forgotten after since, oldest first.
func (f PGForgotten) Forgotten(ctx context.Context, since time.Time) ([]Forgetting, error) {
	schema := f.Schema
	if schema == "" {
		schema = SchemaDefault
	}
	out, err := forgotten(ctx, f.Pool, pgx.Identifier{schema}.Sanitize(), since)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table or schema
		return nil, nil
	}
	return out, err
}

func forgotten(ctx context.Context, pool *pgxpool.Pool, schema string, since time.Time) ([]Forgetting, error) {
	rows, err := pool.Query(ctx, `SELECT subject, forgotten_at, keys_deleted FROM `+schema+`.forgotten
		WHERE forgotten_at > $1 ORDER BY forgotten_at, subject`, since)
	if err != nil {
		return nil, fmt.Errorf("shred: forgotten subjects: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Forgetting, error) {
		var f Forgetting
		err := r.Scan(&f.Subject, &f.At, &f.Keys)
		f.At = f.At.UTC()
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("shred: forgotten subjects: %w", err)
	}
	return out, nil
}

// Evict implements KeyStore.
func (k *PGKeys) Evict(subject string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if id, ok := k.bySubj[subject]; ok {
		delete(k.byID, id)
		delete(k.bySubj, subject)
	}
}
