package sideeffects_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/pkg/sideeffects"
)

// fakeSMTP answers one session on loopback: it accepts the message, then drops the
// connection instead of answering QUIT when dropOnQuit is set.
func fakeSMTP(t *testing.T, dropOnQuit bool) (addr string, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	got = make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r, w := bufio.NewReader(conn), conn
		say := func(s string) { _, _ = w.Write([]byte(s + "\r\n")) }
		say("220 fake")
		var data strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				say("250 fake")
			case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RCPT"):
				say("250 ok")
			case cmd == "DATA":
				say("354 go on")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
					data.WriteString(l)
				}
				say("250 queued")
				got <- data.String()
			case cmd == "QUIT":
				if dropOnQuit {
					return // the connection drops: QUIT gets no answer
				}
				say("221 bye")
				return
			}
		}
	}()
	return ln.Addr().String(), got
}

// A message the server accepted is sent, whatever happens to QUIT afterwards: an
// error there would have the effect retried and the mail sent twice.
func TestSendAcceptedMessageIsSentEvenIfQuitFails(t *testing.T) {
	for _, drop := range []bool{false, true} {
		addr, got := fakeSMTP(t, drop)
		m := sideeffects.Mailer{Addr: addr, From: "from@projector.test", Timeout: 5 * time.Second}
		if err := m.Send(context.Background(), "to@projector.test", "hi", "k@projector.invalid", "body"); err != nil {
			t.Fatalf("QUIT dropped %v: Send returned %v for a message the server accepted", drop, err)
		}
		select {
		case msg := <-got:
			if !strings.Contains(msg, "Message-ID: <k@projector.invalid>") {
				t.Fatalf("message without its Message-ID: %q", msg)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server got no message")
		}
	}
}
