package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/events"
)

func runSend(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var c common
	var typ, subject, data, id, jsonEvent, correlation, causation string
	var seq uint64
	var schema int
	f := cli.NewFlags("send", `producer send: publish one event.

  producer send --type UserRegistered --subject user-1 --data '{"email":"a@example.test"}'
  producer send --json '{"specversion":"1.0","id":"…","source":"…","type":"…","subject":"…","data":{…}}'
  echo '{…}' | producer send --json -

Prints the event's id, partition and offset as JSON.`)
	c.register(f)
	f.String(&typ, "type", "", "", "event type")
	f.String(&subject, "subject", "", "", "aggregate id (the Kafka key)")
	f.String(&data, "data", "", "{}", "event data, JSON")
	f.String(&id, "id", "", "", "event id (default: a new UUIDv7)")
	f.Uint64(&seq, "sequence", "", 0, "the aggregate's version after this event (0: unset)")
	f.Int(&schema, "schema-version", "", 1, "the data's schema version")
	f.String(&correlation, "correlation-id", "", "", "correlation id")
	f.String(&causation, "causation-id", "", "", "causation id")
	f.String(&jsonEvent, "json", "", "", "the whole event as CloudEvents JSON ('-' reads standard input); replaces the flags above")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}

	var e events.Event
	if jsonEvent != "" {
		raw := []byte(jsonEvent)
		if jsonEvent == "-" {
			b, err := io.ReadAll(io.LimitReader(stdin, maxBodyDefault+1))
			if err != nil {
				return fmt.Errorf("read standard input: %w", err)
			}
			raw = b
		}
		ev, err := events.ParseStructured(raw)
		if err != nil {
			return err
		}
		e = ev
	} else {
		if id == "" {
			id = events.NewID()
		}
		e = events.Event{ID: id, Source: c.source, Type: typ, Subject: subject, Time: time.Now().UTC(),
			DataContentType: events.ContentTypeJSON, Data: json.RawMessage(data), Sequence: seq,
			SchemaVersion: schema, CorrelationID: correlation, CausationID: causation}
		if err := e.Validate(); err != nil {
			return err
		}
	}
	pub, _, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	res, err := pub.Publish(ctx, e)
	if err != nil {
		return err
	}
	if len(res) != 1 {
		return errors.New("no result for the event")
	}
	return json.NewEncoder(stdout).Encode(map[string]any{"id": e.ID, "partition": res[0].Partition, "offset": res[0].Offset})
}
