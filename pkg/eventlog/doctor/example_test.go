package doctor_test

import (
	"context"
	"fmt"

	"github.com/projector/projector/pkg/eventlog/doctor"
)

// Offsets as given on a command line: 120 for every partition, 40 for partition 3.
func ExampleParseOffsets() {
	o, err := doctor.ParseOffsets("120,3:40")
	if err != nil {
		panic(err)
	}
	p0, _ := o.For(0)
	p3, _ := o.For(3)
	fmt.Println(p0, p3)
	// Output: 120 40
}

// Scan a topic for misrouted, duplicate, out-of-order and malformed events.
// It needs a Kafka broker, so this example is compiled but not run.
func ExampleScan() {
	from, _ := doctor.ParseOffsets("0")
	rep, err := doctor.Scan(context.Background(), doctor.Config{
		Brokers: []string{"localhost:9092"},
		Topic:   "orders",
		From:    from,
	})
	if err != nil {
		panic(err)
	}
	for _, k := range doctor.Kinds {
		if n := rep.Counts[k]; n > 0 {
			fmt.Printf("%s: %d (%s)\n", k, n, doctor.Advice[k])
		}
	}
	fmt.Println("clean:", rep.OK())
}
