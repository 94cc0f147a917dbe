package domain

import (
	"context"
	"fmt"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/sideeffects"
)

// WelcomeEmailEffect is the name of the example domain's welcome email effect.
const WelcomeEmailEffect = "welcome_email"

// Mailer sends mail over SMTP: sideeffects.Mailer, which users build too.
type Mailer = sideeffects.Mailer

// WelcomeEmail returns the effect that sends a welcome email on UserRegistered. The
// Message-ID is derived from the idempotency key, so a retried run sends a message
// the mail system recognises as the same one.
func WelcomeEmail(reg *events.Registry, m Mailer) (*sideeffects.Effect, error) {
	e, err := sideeffects.Define(WelcomeEmailEffect, reg)
	if err != nil {
		return nil, err
	}
	sideeffects.On(e, func(ctx context.Context, run sideeffects.Run, ev events.Event, v UserRegistered) error {
		body := fmt.Sprintf("Hello %s,\r\n\r\nwelcome aboard! Your account %s is ready.\r\n", v.Name, v.UserID)
		return m.Send(ctx, v.Email, "Welcome, "+v.Name, MessageID(run.Key), body)
	})
	return e, nil
}

// MessageID is the Message-ID of a run with idempotency key key.
func MessageID(key string) string { return sideeffects.MessageID(key) }
