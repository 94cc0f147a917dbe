package testenv

import "testing"

// Mailpit is the SMTP sink: mail sent to SMTPAddr can be read back through APIURL.
type Mailpit struct {
	SMTPAddr string // host:port of the SMTP listener
	APIURL   string // base URL of the HTTP API, without a trailing slash
}

// MailpitServer returns the Mailpit endpoints. Mailpit's mailbox is shared by every
// test: filter messages by a recipient or subject unique to the test.
func MailpitServer(tb testing.TB) Mailpit {
	tb.Helper()
	s := Get(tb)
	return Mailpit{SMTPAddr: s.SMTPAddr, APIURL: s.MailpitURL}
}
