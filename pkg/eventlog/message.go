package eventlog

import (
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/pkg/events"
)

// ToMessage encodes an event as a kafka-go message in binary content mode.
func ToMessage(e events.Event) (kafka.Message, error) {
	rec, err := events.Encode(e)
	if err != nil {
		return kafka.Message{}, err
	}
	m := kafka.Message{Key: rec.Key, Value: rec.Value, Headers: make([]kafka.Header, len(rec.Headers))}
	for i, h := range rec.Headers {
		m.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
	}
	return m, nil
}

// FromMessage decodes an event from a kafka-go message in either content mode.
func FromMessage(m kafka.Message) (events.Event, error) {
	rec := events.Record{Key: m.Key, Value: m.Value, Headers: make([]events.Header, len(m.Headers))}
	for i, h := range m.Headers {
		rec.Headers[i] = events.Header{Key: h.Key, Value: h.Value}
	}
	return events.Decode(rec)
}
