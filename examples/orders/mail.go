package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/service"
	"github.com/projector/projector/pkg/sideeffects"
)

// tutorial:begin mail
// ShippedMailEffect is the name of the mail sent when an order ships. The name is
// part of every idempotency key: renaming the effect would send every mail again.
const ShippedMailEffect = "shipped_mail"

// ShippedMail mails the customer when their order ships, at most once per order
// however often the log is replayed. The event carries only ids: the customer's
// name, email and address come from the read model, through the run's read-only
// handle, which sees the read model as of the event's commit or later — here the
// customer's row as it is now, with the address they last moved to.
func ShippedMail(reg *events.Registry, d service.Deps) (*sideeffects.Effect, error) {
	e, err := sideeffects.Define(ShippedMailEffect, reg)
	if err != nil {
		return nil, err
	}
	sideeffects.On(e, func(ctx context.Context, run sideeffects.Run, _ events.Event, v OrderShipped) error {
		var name, email, address, item string
		err := run.ReadModel.Read(ctx, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT c.name, c.email, c.address, o.item
				FROM orders o JOIN customers c USING (customer_id) WHERE o.order_id = $1`, v.OrderID).
				Scan(&name, &email, &address, &item)
		})
		if err != nil {
			return fmt.Errorf("order %s: %w", v.OrderID, err) // transient: retried
		}
		body := fmt.Sprintf("Hello %s,\r\n\r\nyour order %s (%s) is on its way with %s to:\r\n%s\r\n", name, v.OrderID, item, v.Carrier, address)
		return d.Mailer.Send(ctx, email, "Order "+v.OrderID+" shipped", sideeffects.MessageID(run.Key), body)
	})
	return e, nil
}

// tutorial:end mail
