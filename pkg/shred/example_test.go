package shred_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

type signedUp struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

// Seal encrypts an event's personal fields under its subject's key before it is
// published; Open decrypts on read. Once the subject is forgotten (its key
// deleted), every read sees those fields redacted. A service keeps its keys in
// PostgreSQL (shred.OpenPG); here newMemKeys is the in-memory KeyStore of this
// package's tests.
func Example() {
	ctx := context.Background()
	reg := events.NewRegistry()
	events.Register[signedUp](reg, "SignedUp", events.WithPersonalData("user_id", "email"))
	keys := newMemKeys()

	e, _ := reg.New("users-api", "user-7", signedUp{UserID: "user-7", Email: "ada@example.com"})
	evs := []events.Event{e}
	if err := shred.Seal(ctx, keys, reg, evs); err != nil {
		panic(err)
	}
	fmt.Println(evs[0].Encryption, evs[0].EncryptedFields, strings.Contains(string(evs[0].Data), "ada@"))

	plain := evs[0]
	if err := shred.Open(ctx, keys, nil, &plain); err != nil {
		panic(err)
	}
	fmt.Println(string(plain.Data))

	_, _ = keys.Forget(ctx, "user-7")
	gone := evs[0]
	if err := shred.Open(ctx, keys, nil, &gone); err != nil {
		panic(err)
	}
	fmt.Println(string(gone.Data), gone.Redacted)
	// Output:
	// aes-256-gcm [email] false
	// {"email":"ada@example.com","user_id":"user-7"}
	// {"email":"[forgotten]","user_id":"user-7"} [email]
}
