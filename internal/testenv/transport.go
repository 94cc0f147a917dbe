package testenv

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Transport returns a kafka-go Transport of the test's own, whose connections (and
// the metadata goroutine each of its pools runs) are closed when the test ends. Use
// it for a test's Writers and Clients: kafka-go's Writer.Close does not close a
// Transport it was given, and a dropped Transport leaks its goroutines, which goleak
// reports.
func Transport(tb testing.TB) *kafka.Transport {
	tb.Helper()
	tr := &kafka.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return tr
}

// KafkaClient returns a kafka-go Client for the stack's brokers over a Transport
// closed when the test ends.
func KafkaClient(tb testing.TB) *kafka.Client {
	tb.Helper()
	return &kafka.Client{Addr: kafka.TCP(Kafka(tb)...), Timeout: 10 * time.Second, Transport: Transport(tb)}
}
