package eventlog_test

import (
	"fmt"

	"github.com/projector/projector/pkg/eventlog"
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
