package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/shred"
)

// forgetResult is what forgetting a subject did.
type forgetResult struct {
	Subject     string    `json:"subject"`
	ForgottenAt time.Time `json:"forgotten_at"`
	KeysDeleted int       `json:"keys_deleted"`
	EventID     string    `json:"event_id"`
	Partition   int       `json:"partition"`
	Offset      int64     `json:"offset"`
}

func checkSubject(subject string) error {
	switch {
	case strings.TrimSpace(subject) == "":
		return errors.New("the subject is empty")
	case len(subject) > 256:
		return fmt.Errorf("the subject is %d bytes, longer than 256", len(subject))
	case !utf8.ValidString(subject) || strings.ContainsRune(subject, 0):
		return errors.New("the subject is not valid UTF-8 text")
	}
	return nil
}

// forgetSubject deletes the subject's keys for good, then publishes SubjectForgotten
// on the subject's partition. Both steps are idempotent: after a failure, forget
// again (the event is published again; handlers purge idempotently).
func forgetSubject(ctx context.Context, keys shred.KeyStore, pub publisher, source, subject, reason string) (forgetResult, error) {
	if err := checkSubject(subject); err != nil {
		return forgetResult{}, err
	}
	f, err := keys.Forget(ctx, subject)
	if err != nil {
		return forgetResult{}, err
	}
	ev, err := registry().New(source, subject, shred.SubjectForgotten{SubjectID: subject, At: f.At, Keys: f.Keys, Reason: reason})
	if err != nil {
		return forgetResult{}, err
	}
	res, err := pub.Publish(ctx, ev)
	if err != nil {
		return forgetResult{}, fmt.Errorf("the keys of %q are deleted, but the SubjectForgotten event was not published (forget again to publish it): %w", subject, err)
	}
	return forgetResult{Subject: subject, ForgottenAt: f.At, KeysDeleted: f.Keys, EventID: ev.ID, Partition: res[0].Partition, Offset: res[0].Offset}, nil
}

func runForget(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	var c common
	var reason string
	f := cli.NewFlags("forget", `producer forget SUBJECT: forget a person (crypto-shredding).

Deletes the subject's data keys from the key store, for good, and publishes a
SubjectForgotten event on the subject's partition. From then on every read of the
subject's events — live, a replay, a bootstrap, a point-in-time replay — sees their
personal fields redacted ("`+shred.Redacted+`"), and projections purge what they kept.
Needs the master key and the key store's database. Prints what it did as JSON.`)
	c.register(f)
	f.String(&reason, "reason", "", "", "why, kept in the event (no personal data)")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	if len(f.Args()) != 1 {
		return fmt.Errorf("forget takes one SUBJECT, got %d arguments (see producer forget --help)", len(f.Args()))
	}
	if c.personal.masterKey == "" {
		return fmt.Errorf("forget needs the key store: %w", shred.ErrNoMasterKey)
	}
	pub, _, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	res, err := forgetSubject(ctx, pub.keys, pub.kafka, c.source, f.Args()[0], reason)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

func runKeygen(_ context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	f := cli.NewFlags("keygen", `producer keygen: print a new random master key (32 bytes, base64) for `+shred.MasterKeyEnv+`.

Keep it secret and keep it: without it no personal data in the log can be read.`)
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, shred.NewMasterKey())
	return err
}
