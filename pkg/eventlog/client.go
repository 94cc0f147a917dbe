package eventlog

import (
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
)

// ClientTimeoutDefault bounds each request a Client sends when its context has no
// earlier deadline.
const ClientTimeoutDefault = 10 * time.Second

// Client is a long-lived connection to a Kafka cluster for metadata, offsets and
// topic administration: one per process, or per projector.Runner, closed on exit.
// It is safe for concurrent use.
//
// Partitions answers from the transport's metadata, which kafka-go refreshes every
// few seconds; ReadLayout and DescribeTopic read it afresh (see refresh).
//
// It owns a kafka-go Transport. Each connection pool of a Transport runs a goroutine
// that refreshes the cluster's metadata until the Transport's connections are closed,
// and nothing else closes them: a Transport made per call and dropped leaves its
// goroutine and connections behind for the life of the process. A Transport of its own
// also because kafka-go's shared DefaultTransport caches metadata for 6 s, so a topic
// created a moment ago can look missing to a writer that shares it (seen here:
// "Unknown Topic Or Partition").
//
// The package's functions that take brokers (Partitions, ReadLayout, EnsureTopic, …)
// open a Client and close it before they return: fine for a command that asks once,
// wasteful in a loop, where a Client's methods should be used instead.
type Client struct {
	brokers []string
	tr      *kafka.Transport
	kc      *kafka.Client
}

// NewClient returns a Client for the brokers. It does not dial: the first request does.
func NewClient(brokers []string) *Client {
	tr := &kafka.Transport{}
	return &Client{
		brokers: slices.Clone(brokers),
		tr:      tr,
		kc:      &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: ClientTimeoutDefault, Transport: tr},
	}
}

// Brokers returns the addresses the Client was made with.
func (c *Client) Brokers() []string { return slices.Clone(c.brokers) }

// Kafka returns the kafka-go client underneath, over the Client's transport, for
// requests this package does not wrap. It is closed with the Client.
func (c *Client) Kafka() *kafka.Client { return c.kc }

// Close closes the Client's connections and ends their goroutines. Requests in flight
// keep their connection until they finish, then it closes. A request after Close
// connects again, and needs another Close.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// refresh makes the next request read the cluster's metadata afresh. kafka-go's
// transport answers metadata requests from a cache it refreshes in the background
// (every MetadataTTL, 6 s by default), so a partition count read from it can lag a
// topic that just grew. Requests in flight finish on the connections they have; the
// next one opens new connections whose metadata is read first.
func (c *Client) refresh() { c.tr.CloseIdleConnections() }

// withClient runs fn over a Client it closes: the package functions' one-shot form.
func withClient[T any](brokers []string, fn func(c *Client) (T, error)) (T, error) {
	c := NewClient(brokers)
	defer c.Close()
	return fn(c)
}
