package domain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"

	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/sideeffects"
)

// WelcomeEmailEffect is the name of the example domain's welcome email effect.
const WelcomeEmailEffect = "welcome_email"

// Mailer sends mail over SMTP.
type Mailer struct {
	Addr    string        // host:port of the SMTP server
	From    string        // envelope and header sender
	Timeout time.Duration // bound on one send (default 10 s)
}

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
func MessageID(key string) string { return key + "@projector.invalid" }

// Send delivers one message. A 5xx answer is permanent (the effect parks at once);
// a 4xx answer or a network failure is transient (the effect is retried).
func (m Mailer) Send(ctx context.Context, to, subject, messageID, body string) error {
	if strings.ContainsAny(to+subject+messageID, "\r\n") {
		return sideeffects.Permanent(errors.New("mail: header values must not contain line breaks"))
	}
	timeout := m.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("mail: dial %s: %w", m.Addr, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	host, _, _ := net.SplitHostPort(m.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		_ = conn.Close()
		return classify(err)
	}
	defer func() { _ = c.Close() }()
	msg := "From: " + m.From + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + messageID + ">\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
	if err := c.Mail(m.From); err != nil {
		return classify(err)
	}
	if err := c.Rcpt(to); err != nil {
		return classify(err)
	}
	w, err := c.Data()
	if err != nil {
		return classify(err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return classify(err)
	}
	if err := w.Close(); err != nil {
		return classify(err)
	}
	// The server accepted the message (250 after DATA): it is sent. A QUIT that fails
	// now (a timeout, a dropped connection) must not fail the run, whose retry would
	// send it a second time.
	_ = c.Quit()
	return nil
}

func classify(err error) error {
	var tp *textproto.Error
	if errors.As(err, &tp) && tp.Code >= 500 {
		return sideeffects.Permanent(fmt.Errorf("mail: refused: %w", err))
	}
	if err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	return nil
}
