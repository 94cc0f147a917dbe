package sideeffects_test

import (
	"fmt"

	"github.com/projector/projector/pkg/sideeffects"
)

// Each run of an effect on an event has a stable idempotency key: a replay, a
// retry or another instance computes the same one, so the ledger runs it once, and
// a mail sent with its Message-ID is deduplicated downstream as well.
func ExampleKey() {
	k := sideeffects.Key("receipt", "0193a1c2-7f3e-7b1a-9c44-2f1d0e6b5a10")
	fmt.Println(k)
	fmt.Println(sideeffects.MessageID(k))
	fmt.Println(k == sideeffects.Key("invoice", "0193a1c2-7f3e-7b1a-9c44-2f1d0e6b5a10"))
	// Output:
	// b5b78e0b6d9d771640597320f8b112d3
	// b5b78e0b6d9d771640597320f8b112d3@projector.invalid
	// false
}
