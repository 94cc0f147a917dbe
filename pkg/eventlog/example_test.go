package eventlog_test

import (
	"context"
	"fmt"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

// An aggregate's events share a key (its subject), so they land in one partition:
// the one Kafka's default partitioner picks, whichever client wrote them.
func ExampleMurmur2Partition() {
	for _, subject := range []string{"order-1", "order-2", "order-1"} {
		fmt.Println(subject, eventlog.Murmur2Partition([]byte(subject), eventlog.PartitionsDefault))
	}
	// Output:
	// order-1 10
	// order-2 3
	// order-1 10
}

// Publish an event to the log. It needs a Kafka broker, so this example is compiled
// but not run.
func ExamplePublisher() {
	ctx := context.Background()
	reg := events.NewRegistry()
	events.Register[orderShipped](reg, "OrderShipped")
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: []string{"localhost:9092"}, Topic: "orders"})
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	e, err := reg.New("orders-api", "order-1", orderShipped{OrderID: "order-1", Carrier: "DHL"})
	if err != nil {
		panic(err)
	}
	res, err := pub.Publish(ctx, e)
	if err != nil {
		// With errors.Is(err, eventlog.ErrOutcomeUnknown) the event may be in the log:
		// publishing it again, same ID, is safe (consumers deduplicate on the ID).
		panic(err)
	}
	fmt.Println("partition", res[0].Partition, "offset", res[0].Offset)
}

type orderShipped struct {
	OrderID string `json:"order_id"`
	Carrier string `json:"carrier"`
}
