package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/sideeffects"
)

// The effect crash window is what was in flight: the projector is SIGKILLed twice
// while welcome mails go out to live users, through a mail server that takes
// 100 ms a mail, and each kill re-sends, per partition, at most the runs that were
// in flight — the effect concurrency — never a whole reserved batch. Every re-sent
// mail carries its first Message-ID.
func TestSIGKILLWhileMailsGoOutResendsAtMostTheRunsInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	const partitions, concurrency, kills = 4, 4, 2
	const lease = 2 * time.Second
	f := newProcFixture(t, partitions)
	var b [4]byte
	_, _ = crand.Read(b[:])
	prefix := "inflight" + hex.EncodeToString(b[:])
	mail := testenv.MailpitServer(t)
	f.fxArgs = []string{"--redis-url", testenv.Get(t).RedisURL, "--ledger-namespace", prefix, "--smtp-addr", slowSMTP(t, mail.SMTPAddr, 100*time.Millisecond),
		"--effect-lease", lease.String(), "--effect-concurrency", "4", "--effect-batch", "16"}
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 16, Users: 1116, Start: time.Now().UTC(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 3750) // 1,116 registrations
	regs := f.registrationPartitions(prefix)
	mails := func() []testenv.Message { return mail.Messages(t, "@"+prefix+".example.test") }

	p := f.start("run-0")
	snapshots := []map[string]int{{}}
	for k := range kills {
		// Kill while mails go out, once the last restart has re-run what the last
		// kill left behind (its leases ended), so that each kill's re-sends are
		// counted before the next.
		at := (k + 1) * len(regs) / (kills + 1)
		testenv.WaitFor(t, 2*time.Minute, "mails going out", func() bool { return len(distinct(mails())) >= at })
		before := len(mails())
		time.Sleep(300 * time.Millisecond)
		out := len(mails())
		if out == before || len(distinct(mails())) >= len(regs) {
			t.Fatalf("kill %d: %d mails out, none in the last 300 ms, or all: it would not land while mails go out", k+1, out)
		}
		p.kill(t)
		time.Sleep(300 * time.Millisecond) // what the killed process handed over is stored
		snapshots = append(snapshots, distinct(mails()))
		t.Logf("kill %d: SIGKILLed with %d mails out, %d in its last 300 ms", k+1, out, out-before)
		p = f.start(fmt.Sprintf("run-%d", k+1))
		time.Sleep(lease + time.Second)
	}
	testenv.WaitFor(t, 2*time.Minute, "every welcome mail", func() bool { return len(distinct(mails())) >= len(regs) })
	p.stop(t)
	final := distinct(mails())
	snapshots = append(snapshots, final)

	for id := range final {
		if _, ok := regs[id]; !ok {
			t.Fatalf("a mail with Message-ID %q matches no registration's idempotency key", id)
		}
	}
	if len(final) != len(regs) {
		t.Fatalf("%d of %d registrations got a mail", len(final), len(regs))
	}
	// A re-send after kill k arrives between the snapshot at kill k and the one at
	// kill k+1 (or the end): a copy beyond the first.
	total := 0
	for k := 1; k <= kills; k++ {
		resent := map[int]int{}
		for id, n := range snapshots[k+1] {
			resent[regs[id]] += n - max(snapshots[k][id], 1)
		}
		for part := range partitions {
			total += resent[part]
			if resent[part] > concurrency {
				t.Errorf("kill %d re-sent %d mails of partition %d: more than the %d runs that can be in flight", k, resent[part], part, concurrency)
			}
		}
		t.Logf("kill %d: mails re-sent by partition %v", k, resent)
	}
	if before := dups(snapshots[1]); before != 0 {
		t.Errorf("%d mails sent twice before any kill", before)
	}
	t.Logf("%d live users registered; %d SIGKILLs while mails went out; %d mails re-sent in all (at most %d: %d per partition per kill), each with its first Message-ID",
		len(regs), kills, total, kills*partitions*concurrency, concurrency)
}

// dups counts the copies beyond the first.
func dups(seen map[string]int) int {
	n := 0
	for _, c := range seen {
		n += c - 1
	}
	return n
}

// slowSMTP returns the address of a proxy to the mail server at upstream that
// answers each connection delay late, as a distant mail server does: sends take
// that long, and a kill finds the runs in flight mid-send.
func slowSMTP(t *testing.T, upstream string, delay time.Duration) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				time.Sleep(delay)
				u, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", upstream)
				if err != nil {
					return
				}
				defer func() { _ = u.Close() }()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return l.Addr().String()
}

// registrationPartitions returns, for the log's registrations of users with the
// prefix, the Message-ID each must produce and the partition it lives on.
func (f *procFixture) registrationPartitions(prefix string) map[string]int {
	out := map[string]int{}
	for _, m := range testenv.ReadAll(f.t, f.topic) {
		e, err := eventlog.FromMessage(m)
		if err == nil && e.Type == domain.TypeUserRegistered && strings.HasPrefix(e.Subject, prefix) {
			out[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = m.Partition
		}
	}
	return out
}
