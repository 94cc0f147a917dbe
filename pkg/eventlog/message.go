package eventlog

import (
	"unsafe"

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
	return events.Decode(events.Record{Key: m.Key, Value: m.Value, Headers: eventHeaders(m.Headers)})
}

// The two header types have the same fields, in the same order (this conversion
// compiles only then), so they have the same layout.
var _ = events.Header(kafka.Header{})

// eventHeaders returns hs as events' headers, in place: a replay reads a million
// records, and events.Decode only reads them.
func eventHeaders(hs []kafka.Header) []events.Header {
	return unsafe.Slice((*events.Header)(unsafe.Pointer(unsafe.SliceData(hs))), len(hs))
}
