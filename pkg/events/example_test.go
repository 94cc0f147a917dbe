package events_test

import (
	"fmt"

	"github.com/projector/projector/pkg/events"
)

type userRegistered struct {
	UserID string `json:"user_id"`
	Name   string `json:"name"`
}

// Register a Go type under an event type name, build an event, encode it for Kafka
// and decode it back to the Go type.
func Example() {
	reg := events.NewRegistry()
	events.Register[userRegistered](reg, "UserRegistered")

	e, err := reg.New("users-api", "user-42", userRegistered{UserID: "user-42", Name: "Ada"}, events.WithSequence(1))
	if err != nil {
		panic(err)
	}
	rec, err := events.Encode(e) // key, value and ce_ headers
	if err != nil {
		panic(err)
	}
	back, err := events.Decode(rec)
	if err != nil {
		panic(err)
	}
	d, err := reg.Decode(back)
	if err != nil {
		panic(err)
	}
	v, _ := events.As[userRegistered](d)
	fmt.Println(string(rec.Key), d.Type, d.Sequence, v.Name)
	// Output: user-42 UserRegistered 1 Ada
}
