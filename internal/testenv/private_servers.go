package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// PrivateRedis is a Redis server of one test's own, for faults that would disturb
// other tests: FLUSHALL, a kill, a restart without persistence.
type PrivateRedis struct {
	Client *redis.Client
	tb     testing.TB
	port   int
	dir    string
	cmd    *exec.Cmd
}

// NewPrivateRedis starts redis-server (the stack's binary) on a free loopback port,
// without persistence; it is stopped when the test ends.
func NewPrivateRedis(tb testing.TB) *PrivateRedis {
	tb.Helper()
	Get(tb)
	r := &PrivateRedis{tb: tb, port: freePort(tb), dir: tb.TempDir()}
	r.Start()
	r.Client = redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	tb.Cleanup(func() {
		_ = r.Client.Close()
		r.Kill()
	})
	return r
}

// Start starts the server (again) and waits for PING.
func (r *PrivateRedis) Start() {
	r.tb.Helper()
	r.cmd = exec.CommandContext(context.Background(), "redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--dir", r.dir, "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		r.tb.Fatalf("redis-server: %v (run scripts/stack.sh up)", err)
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	defer func() { _ = c.Close() }()
	waitUntil(r.tb, 30*time.Second, "private redis", func() bool { return c.Ping(context.Background()).Err() == nil })
}

// Kill ends the server with SIGKILL, by pid: without persistence it comes back empty.
func (r *PrivateRedis) Kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// PrivateMailpit is a Mailpit of one test's own: it can be stopped and started, or
// made to refuse every recipient.
type PrivateMailpit struct {
	Mailpit
	tb       testing.TB
	smtpPort int
	httpPort int
	args     []string
	cmd      *exec.Cmd
}

// NewPrivateMailpit starts the stack's Mailpit binary on free loopback ports, with
// extra arguments (e.g. --smtp-allowed-recipients to refuse mail); it is stopped
// when the test ends.
func NewPrivateMailpit(tb testing.TB, args ...string) *PrivateMailpit {
	tb.Helper()
	Get(tb)
	m := &PrivateMailpit{tb: tb, smtpPort: freePort(tb), httpPort: freePort(tb), args: args}
	m.SMTPAddr = "127.0.0.1:" + strconv.Itoa(m.smtpPort)
	m.APIURL = "http://127.0.0.1:" + strconv.Itoa(m.httpPort)
	m.Start()
	tb.Cleanup(m.Stop)
	return m
}

func mailpitBinary(tb testing.TB) string {
	cache := os.Getenv("PROJECTOR_CACHE_DIR")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "projector")
	}
	bin := filepath.Join(cache, "bin", "mailpit")
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("mailpit binary: %v (run scripts/stack.sh up)", err)
	}
	return bin
}

// Start starts the server and waits for its API.
func (m *PrivateMailpit) Start() {
	m.tb.Helper()
	args := append([]string{"--smtp", m.SMTPAddr, "--listen", "127.0.0.1:" + strconv.Itoa(m.httpPort),
		"--disable-version-check", "--smtp-disable-rdns", "--database", filepath.Join(m.tb.TempDir(), "mailpit.db")}, m.args...)
	m.cmd = exec.CommandContext(context.Background(), mailpitBinary(m.tb), args...)
	if err := m.cmd.Start(); err != nil {
		m.tb.Fatal(err)
	}
	waitUntil(m.tb, 30*time.Second, "private mailpit", func() bool {
		resp, err := httpGet(m.APIURL + "/api/v1/info")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// Stop stops the server by pid. Its mailbox goes with it.
func (m *PrivateMailpit) Stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
		m.cmd = nil
	}
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

func waitUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not come up within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(url string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
