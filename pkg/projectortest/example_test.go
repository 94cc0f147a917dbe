package projectortest_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projectortest"
	"github.com/projector/projector/pkg/readmodel"
)

type CartItemAdded struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// A projection of shopping carts, tested against a real PostgreSQL transaction
// without Kafka. The harness works in a scratch schema of its own and drops it at
// Close, so it is safe against a database that holds the real carts_example_v1.
//
// The example needs PostgreSQL (DATABASE_URL), which an Example cannot skip without:
// so it has no Output comment, and go test only compiles it. TestExample runs it
// against the test stack and checks what it prints: "cart-1 holds 3 tea".
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	reg := events.NewRegistry()
	events.Register[CartItemAdded](reg, "CartItemAdded")
	carts, err := readmodel.New("carts_example", 1, reg)
	if err != nil {
		fmt.Println(err)
		return
	}
	carts.Migrate(`CREATE TABLE items (cart text, sku text, quantity int, PRIMARY KEY (cart, sku))`)
	readmodel.Handle(carts, func(_ context.Context, w *readmodel.Writer, e events.Event, v CartItemAdded) error {
		w.Exec(`INSERT INTO items VALUES ($1, $2, $3)
			ON CONFLICT (cart, sku) DO UPDATE SET quantity = items.quantity + EXCLUDED.quantity`, e.Subject, v.SKU, v.Quantity)
		return nil
	})

	h, err := projectortest.Open(ctx, pool, carts)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = h.Close(ctx) }()

	add := func(cart, sku string, n int) events.Event {
		e, _ := reg.New("shop", cart, CartItemAdded{SKU: sku, Quantity: n})
		return e
	}
	if err := h.Apply(ctx, add("cart-1", "tea", 2), add("cart-1", "tea", 1), add("cart-2", "cake", 1)); err != nil {
		fmt.Println(err)
		return
	}
	var tea int
	if err := h.DB().QueryRow(ctx, `SELECT quantity FROM items WHERE cart = 'cart-1' AND sku = 'tea'`).Scan(&tea); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("cart-1 holds", tea, "tea")
}
