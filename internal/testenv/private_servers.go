package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/projector/projector/internal/servers"
)

// PrivateRedis is a Redis server of one test's own, for faults that would disturb
// other tests: FLUSHALL, a kill, a restart without persistence.
type PrivateRedis struct {
	Client *redis.Client
	tb     testing.TB
	srv    servers.Redis
	proc   *servers.Process
}

// NewPrivateRedis starts redis-server (the stack's binary, internal/servers'
// description, Lifetime Private: no persistence) on a free loopback port; it is
// stopped when the test ends.
func NewPrivateRedis(tb testing.TB) *PrivateRedis {
	tb.Helper()
	Get(tb)
	r := &PrivateRedis{tb: tb, srv: servers.Redis{Port: freePort(tb), Dir: tb.TempDir()}}
	r.Start()
	r.Client = redis.NewClient(&redis.Options{Addr: r.srv.Addr()})
	tb.Cleanup(func() {
		_ = r.Client.Close()
		r.Kill()
	})
	return r
}

// Start starts the server (again) and waits for PING.
func (r *PrivateRedis) Start() {
	r.tb.Helper()
	r.proc = startPrivate(r.tb, r.srv, filepath.Join(r.srv.Dir, "redis.log"), 30*time.Second)
}

// Kill ends the server with SIGKILL, by pid: without persistence it comes back empty.
func (r *PrivateRedis) Kill() {
	if r.proc != nil {
		r.proc.Kill()
		r.proc = nil
	}
}

// PrivateMailpit is a Mailpit of one test's own: it can be stopped and started, or
// made to refuse every recipient.
type PrivateMailpit struct {
	Mailpit
	tb   testing.TB
	srv  servers.Mailpit
	proc *servers.Process
}

// NewPrivateMailpit starts the stack's Mailpit binary on free loopback ports, with
// extra arguments (e.g. --smtp-allowed-recipients to refuse mail); it is stopped
// when the test ends.
func NewPrivateMailpit(tb testing.TB, args ...string) *PrivateMailpit {
	tb.Helper()
	Get(tb)
	m := &PrivateMailpit{tb: tb, srv: servers.Mailpit{SMTPPort: freePort(tb), HTTPPort: freePort(tb), Extra: args}}
	m.SMTPAddr = m.srv.SMTPAddr()
	m.APIURL = m.srv.APIURL()
	m.Start()
	tb.Cleanup(m.Stop)
	return m
}

// Start starts the server with an empty mailbox and waits for its API.
func (m *PrivateMailpit) Start() {
	m.tb.Helper()
	m.srv.Dir = m.tb.TempDir()
	m.proc = startPrivate(m.tb, m.srv, filepath.Join(m.srv.Dir, "mailpit.log"), 30*time.Second)
}

// Stop stops the server by pid. Its mailbox goes with it.
func (m *PrivateMailpit) Stop() {
	if m.proc != nil {
		m.proc.Kill()
		m.proc = nil
	}
}

// startPrivate starts a private server and waits until it answers, or fails the
// test with the end of its log.
func startPrivate(tb testing.TB, srv servers.Server, logPath string, timeout time.Duration) *servers.Process {
	tb.Helper()
	if err := srv.Check(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	p, err := servers.Start(ctx, srv, logPath, timeout)
	if err != nil {
		tb.Fatalf("private %s: %v", srv.Name(), err)
	}
	return p
}

// Message is a mail as Mailpit's API lists it.
type Message struct {
	ID        string `json:"ID"`
	MessageID string `json:"MessageID"`
	Subject   string `json:"Subject"`
	To        []struct {
		Address string `json:"Address"`
	} `json:"To"`
}

// Messages returns the messages whose recipient contains to, through the API.
func (m Mailpit) Messages(tb testing.TB, to string) []Message {
	tb.Helper()
	var out []Message
	for start := 0; ; {
		q := fmt.Sprintf("%s/api/v1/search?query=%s&start=%d&limit=1000", m.APIURL, url.QueryEscape("to:"+to), start)
		resp, err := httpGet(q)
		if err != nil {
			tb.Fatalf("mailpit search: %v", err)
		}
		var body struct {
			Total    int       `json:"messages_count"`
			Messages []Message `json:"messages"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if err != nil {
			tb.Fatalf("mailpit search: %v", err)
		}
		out = append(out, body.Messages...)
		start += len(body.Messages)
		if len(body.Messages) == 0 || start >= body.Total {
			return out
		}
	}
}

func httpGet(url string) (*http.Response, error) {
	// A loaded machine's Mailpit, searching a large store, can take several seconds.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Close = true // no idle keep-alive connection (and its goroutines) left behind for goleak
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
