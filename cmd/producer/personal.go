package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// personal holds the settings for events with personal data (crypto-shredding).
type personal struct {
	masterKey   string
	databaseURL string
	keySchema   string
	plaintext   bool
}

func (p *personal) register(f *cli.Flags) {
	f.String(&p.masterKey, "master-key", shred.MasterKeyEnv, "", "master key of the personal-data key store (32 bytes, base64 or hex); personal fields are encrypted under per-subject keys it protects")
	f.String(&p.databaseURL, "database-url", "DATABASE_URL", "", "PostgreSQL holding the personal-data key store (with --master-key)")
	f.String(&p.keySchema, "key-schema", "PROJECTOR_KEY_SCHEMA", shred.SchemaDefault, "schema of the key store")
	f.Bool(&p.plaintext, "plaintext-personal-data", "PRODUCER_PLAINTEXT_PERSONAL_DATA", false, "publish personal fields unencrypted when no master key is set (they can then never be forgotten)")
}

// openKeys opens the key store, or returns nil when no master key is set. A wrong
// or malformed master key is refused here, before anything is published.
func (p *personal) openKeys(ctx context.Context) (*shred.PGKeys, *pgxpool.Pool, error) {
	if p.masterKey == "" {
		return nil, nil, nil
	}
	master, err := shred.ParseMasterKey(p.masterKey)
	if err != nil {
		return nil, nil, fmt.Errorf("--master-key (%s): %w", shred.MasterKeyEnv, err)
	}
	if p.databaseURL == "" {
		return nil, nil, errors.New("--database-url (DATABASE_URL) is needed with --master-key: the key store lives in PostgreSQL")
	}
	pool, err := pgxpool.New(ctx, p.databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--database-url (DATABASE_URL): %w", err)
	}
	where := "database " + cli.DatabaseAddr(p.databaseURL) + " (--database-url, DATABASE_URL)"
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("key store: %s: %w", where, err)
	}
	keys, err := shred.OpenPG(ctx, pool, master, shred.PGOptions{Schema: p.keySchema})
	if err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("key store (schema %s, %s): %w", p.keySchema, where, err)
	}
	return keys, pool, nil
}

// kafkaPublisher is a publisher whose errors name the brokers it writes to.
type kafkaPublisher struct {
	*eventlog.Publisher
	brokers []string
}

// Publish publishes the events; an error names the brokers.
func (p kafkaPublisher) Publish(ctx context.Context, evs ...events.Event) ([]eventlog.Result, error) {
	res, err := p.Publisher.Publish(ctx, evs...)
	if err != nil {
		err = kafkaErr(p.brokers, err)
	}
	return res, err
}

// kafkaErr says which brokers an error of Kafka's came from.
func kafkaErr(brokers []string, err error) error {
	return fmt.Errorf("kafka at %s (--brokers, KAFKA_BROKERS): %w", strings.Join(brokers, ","), err)
}

// outlet publishes events, encrypting their personal fields first.
type outlet struct {
	*eventlog.Publisher
	kafka     kafkaPublisher // the Publisher, its errors naming the brokers
	keys      shred.KeyStore // nil: no master key
	pool      *pgxpool.Pool
	reg       *events.Registry
	plaintext bool
}

// errPlaintext refuses personal data that would go out unencrypted.
var errPlaintext = errors.New("personal data would be published unencrypted")

// seal returns the events with their personal fields encrypted; the caller's slice
// is not changed. Without a key store, events with personal data are refused unless
// --plaintext-personal-data allows them.
func (o *outlet) seal(ctx context.Context, evs []events.Event) ([]events.Event, error) {
	for i, e := range evs {
		switch {
		case e.Type == shred.TypeSubjectForgotten:
			// It purges read models: only forgetting (which deletes the keys) publishes it.
			return nil, fmt.Errorf("event %d (%s): %w", i, e.ID, &events.ValidationError{Field: "type",
				Err: fmt.Errorf("%w: %s is published by forgetting a subject (producer forget, POST /v1/subjects/{id}/forget), not sent", events.ErrInvalidAttribute, e.Type)})
		case e.Encrypted():
			// The producer encrypts; an event arriving with encryption attributes could
			// claim its plaintext fields are ciphertext, or name a forgotten key.
			return nil, fmt.Errorf("event %d (%s): %w", i, e.ID, &events.ValidationError{Field: "encryption",
				Err: fmt.Errorf("%w: send personal data plain (over TLS); the producer encrypts it", events.ErrInvalidAttribute)})
		}
	}
	if o.keys == nil {
		if o.plaintext {
			return evs, nil
		}
		for i, e := range evs {
			if pd, ok := o.reg.PersonalData(e.Type); ok && !e.Encrypted() {
				return nil, fmt.Errorf("event %d (%s): %w: %s has personal fields (%s); set --master-key (%s) to encrypt them, or --plaintext-personal-data to publish them in the clear (they can then never be forgotten)",
					i, e.ID, errPlaintext, e.Type, strings.Join(pd.Fields, ", "), shred.MasterKeyEnv)
			}
		}
		return evs, nil
	}
	out := append([]events.Event(nil), evs...)
	if err := shred.Seal(ctx, o.keys, o.reg, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Publish encrypts the events' personal fields, then publishes them.
func (o *outlet) Publish(ctx context.Context, evs ...events.Event) ([]eventlog.Result, error) {
	sealed, err := o.seal(ctx, evs)
	if err != nil {
		return nil, err
	}
	return o.kafka.Publish(ctx, sealed...)
}

// Close closes the publisher and the key store's pool.
func (o *outlet) Close() error {
	err := o.Publisher.Close()
	if o.pool != nil {
		o.pool.Close()
	}
	return err
}

// registry is the producer's view of event types: the example domain's, which says
// which types carry personal data.
func registry() *events.Registry { return domain.Registry() }
