package sideeffects

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// MailerTimeoutDefault bounds one send when Mailer.Timeout is zero.
const MailerTimeoutDefault = 10 * time.Second

// Mailer sends plain-text mail over SMTP, for mail effects. Hand it the run's
// idempotency key as the Message-ID (MessageID): a retried run then sends a message
// the mail system recognises as the same one.
type Mailer struct {
	Addr    string        // host:port of the SMTP server
	From    string        // envelope and header sender
	Timeout time.Duration // bound on one send (default MailerTimeoutDefault)
}

// MessageID is the Message-ID of a run with idempotency key key (see Run.Key).
func MessageID(key string) string { return key + "@projector.invalid" }

// Send delivers one message. A 5xx answer is permanent (the effect parks at once);
// a 4xx answer or a network failure is transient (the effect is retried).
func (m Mailer) Send(ctx context.Context, to, subject, messageID, body string) error {
	if strings.ContainsAny(to+subject+messageID, "\r\n") {
		return Permanent(errors.New("mail: header values must not contain line breaks"))
	}
	timeout := m.Timeout
	if timeout == 0 {
		timeout = MailerTimeoutDefault
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
		return classifySMTP(err)
	}
	defer func() { _ = c.Close() }()
	msg := "From: " + m.From + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + messageID + ">\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
	return classifySMTP(deliver(c, m.From, to, msg))
}

// deliver hands msg to the SMTP server: envelope, data, quit.
func deliver(c *smtp.Client, from, to, msg string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	// The server accepted the message (250 after DATA): it is sent. A QUIT that fails
	// now (a timeout, a dropped connection) must not fail the run, whose retry would
	// send it a second time.
	_ = c.Quit()
	return nil
}

// classifySMTP makes a 5xx answer permanent; anything else stays transient.
func classifySMTP(err error) error {
	var tp *textproto.Error
	if errors.As(err, &tp) && tp.Code >= 500 {
		return Permanent(fmt.Errorf("mail: refused: %w", err))
	}
	if err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	return nil
}
