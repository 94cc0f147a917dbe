package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
)

// An effect waiting on its mail server, or on Redis, says so on /status and on the
// status page, per effect and partition, with what it waits on.
func TestAnEffectWaitingOnSMTPOrRedisShowsOnStatusAndThePage(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newProcFixture(t, 2)
	var b [4]byte
	_, _ = crand.Read(b[:])
	prefix := "waits" + hex.EncodeToString(b[:])
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 5, Users: 20, Start: time.Now().UTC(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 200)
	closed := closedPort(t)
	for _, c := range []struct {
		name, smtp, redis, want string
	}{
		{"the mail server", closed, testenv.Get(t).RedisURL, "mail: dial " + closed},
		{"Redis", closed, "redis://" + closed + "/0", "ledger reserve"},
	} {
		addr, stop := f.runInProcess("--effects", domain.WelcomeEmailEffect, "--smtp-addr", c.smtp, "--redis-url", c.redis,
			"--ledger-namespace", prefix, "--effect-attempts", "1000")
		var waiting string
		testenv.WaitFor(t, time.Minute, "an effect waiting on "+c.name+" on /status", func() bool {
			waiting = effectWaiting(addr)
			return strings.Contains(waiting, c.want)
		})
		t.Logf("/status, waiting on %s: %s", c.name, waiting)
		dom := chromium(t, "--virtual-time-budget=1500", "--dump-dom", "http://"+addr+"/")
		if !strings.Contains(dom, `id="effect-partitions"`) || !strings.Contains(dom, c.want) {
			t.Fatalf("the status page does not show the effect waiting on %s (%q):\n%.3000s", c.name, c.want, dom)
		}
		stop()
	}
	// The run closed its Redis client: go-redis's background dialer, started when every
	// dial to the closed port failed, sleeps a second between tries and ends at the
	// first look after the close. Waiting for it here keeps the package's leak check
	// (which retries for half a second) from catching it mid-sleep when this test ends
	// last; a client left open would keep it for ever and fail here.
	testenv.WaitFor(t, 10*time.Second, "go-redis's dialer to end after the run closed its client", func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*ConnPool).tryDial")
	})
}

// effectWaiting returns what the effects on /status wait on, joined.
func effectWaiting(addr string) string {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer func() { _ = resp.Body.Close() }()
	var st struct {
		EffectPartitions []struct {
			Effect    string `json:"effect"`
			Partition int    `json:"partition"`
			Waiting   string `json:"waiting"`
		} `json:"effect_partitions"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return ""
	}
	var out []string
	for _, e := range st.EffectPartitions {
		if e.Waiting != "" {
			out = append(out, e.Waiting)
		}
	}
	return strings.Join(out, "; ")
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
