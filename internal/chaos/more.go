package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/projector/projector/pkg/events"
)

// slowProxy forwards TCP to target, holding every chunk the client sends for delay:
// an SMTP server made slow without changing it.
func slowProxy(ctx context.Context, host, target string, delay time.Duration) (string, func(), error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Close() }()
				s, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
				if err != nil {
					return
				}
				defer func() { _ = s.Close() }()
				go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						time.Sleep(delay)
						if _, werr := s.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), func() { _ = l.Close() }, nil
}

// countLog counts lines containing s in the scenario's projector logs.
func countLog(dir, s string) int {
	n := 0
	files, _ := filepath.Glob(filepath.Join(dir, "projector-*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		n += strings.Count(string(b), s)
	}
	return n
}

// 7. An effect slower than its lease, with a second service sharing the ledger:
// the lease expires mid-run, the other holder runs it too with the same key, and
// the late holder's mark is refused. Every key is delivered, none more than once
// per holder, and always with its own key.
func slowEffect(ctx context.Context, t *T) (Expect, error) {
	addr, closeProxy, err := slowProxy(ctx, t.S.Mailpit.Host, t.S.Mailpit.SMTPAddr(), 400*time.Millisecond)
	if err != nil {
		return Expect{}, err
	}
	defer closeProxy()
	g := t.Generator(t.Rng.Uint64(), 60, "")
	if err := t.PublishGenerated(ctx, g, 400); err != nil {
		return Expect{}, err
	}
	slow := []string{"--smtp-addr", addr, "--effect-lease", "1s", "--effect-concurrency", "4"}
	a, err := t.StartProjector(ctx, slow...)
	if err != nil {
		return Expect{}, err
	}
	// The second service: its own projection and group, the same ledger namespace.
	b, err := t.StartProjector(ctx, append(slow, "--projection", t.Name+"b", "--group", "g-"+t.Name+"b")...)
	if err != nil {
		return Expect{}, err
	}
	err = t.settle(ctx, a, b)
	lost := countLog(t.Dir, "outlived its lease")
	t.R.Note("SMTP held 400 ms per client write (~2.5 s a mail), lease 1 s, two services sharing the ledger: %d lease-lost log lines", lost)
	exp := Expect{Effects: true, MaxRedelivered: 1 << 20}
	exp.Extra = func(obs Observed) []Check {
		per := map[string]int{}
		worst := 0
		for _, m := range obs.Mails {
			per[m]++
			worst = max(worst, per[m])
		}
		return []Check{{"lease expiry: same key, at most once per holder, late mark refused", worst <= 2 && lost > 0,
			fmt.Sprintf("most deliveries of one key: %d (two holders: at most 2); lease-lost reports: %d (want > 0: the lease did expire mid-run)", worst, lost)}}
	}
	return exp, err
}

// 11. HTTP ingest: no token, a wrong token, oversized and malformed bodies are
// refused and never published; 1,000 concurrent clients for a while, and every
// accepted event is applied.
func httpIngest(ctx context.Context, t *T) (Expect, error) {
	port, err := FreePort(ctx, "127.0.0.1")
	if err != nil {
		return Expect{}, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	const token = "chaos-token"
	srv, err := t.Sup.Start("producer", exec.CommandContext(context.WithoutCancel(ctx), t.Bins.Producer, "serve", "--brokers", strings.Join(t.S.Kafka.Brokers(), ","),
		"--topic", t.Topic, "--listen", "127.0.0.1:"+strconv.Itoa(port), "--tokens", token, "--max-body", "65536", "--log-level", "warn",
		"--master-key", t.MasterKey, "--database-url", t.KeyDB.URL()))
	if err != nil {
		return Expect{}, err
	}
	if err := WaitFor(ctx, 30*time.Second, "producer /readyz", func() bool {
		var v any
		return HTTPGetJSON(ctx, base+"/readyz", &v) == nil
	}); err != nil {
		return Expect{}, fmt.Errorf("%w\n%s", err, Tail(srv.Log, 10))
	}
	p, err := t.StartProjector(ctx)
	if err != nil {
		return Expect{}, err
	}
	ic := &ingest{t: t, base: base, token: token,
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1200, MaxConnsPerHost: 1200}}}
	refused, bad := ic.refusals(ctx)
	clients, dur := 1000, 8*time.Second
	if t.P.Full {
		dur = 30 * time.Second
	}
	ok202, other, errs := ic.load(ctx, clients, dur)
	t.R.Note("%d clients for %v: %d accepted (202), %d other answers, %d transport errors; %.0f accepted/s", clients, dur, ok202, other, errs, float64(ok202)/dur.Seconds())
	if err := srv.Term(30 * time.Second); err != nil {
		bad = append(bad, fmt.Sprintf("producer exit: %v", err))
	}
	exp := Expect{Effects: true}
	exp.Extra = func(obs Observed) []Check {
		inLog := map[string]bool{}
		for _, r := range obs.Log {
			inLog[r.Event.ID] = true
		}
		var pub []string
		for _, id := range refused {
			if inLog[id] {
				pub = append(pub, id)
			}
		}
		return []Check{{"refused requests answered right, never published", len(bad) == 0 && len(pub) == 0,
			fmt.Sprintf("%d refusals (401 no token, 401 wrong token, 413, 400 malformed, 400 invalid, 400 duplicate keys): %d answered wrong%s, %d published%s", len(refused), len(bad), examples(bad), len(pub), examples(pub))},
			{"load: requests accepted", ok202 > int64(clients), fmt.Sprintf("%d accepted", ok202)}}
	}
	return exp, t.settle(ctx, p)
}

// ingest posts events to the producer's HTTP API.
type ingest struct {
	t      *T
	client *http.Client
	base   string
	token  string
}

func (ic *ingest) post(ctx context.Context, tok, ctype string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ic.base+"/v1/events", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", ctype)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := ic.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

func ceJSON(e events.Event) []byte {
	b, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": e.ID, "source": e.Source, "type": e.Type, "subject": e.Subject,
		"time": e.Time.Format(time.RFC3339Nano), "sequence": strconv.FormatUint(e.Sequence, 10), "datacontenttype": "application/json", "data": e.Data})
	return b
}

// refusals sends requests the API must refuse; it returns their event ids and what
// was answered wrong.
func (ic *ingest) refusals(ctx context.Context) (refused, bad []string) {
	t, token := ic.t, ic.token
	try := func(what string, want int, tok string, body []byte, id string) {
		code, resp, err := ic.post(ctx, tok, "application/cloudevents+json", body)
		refused = append(refused, id)
		t.Hist.Record(Attempt{EventID: id, Outcome: Failed, Offset: -1, At: time.Now(), Err: what})
		if err != nil || code != want {
			bad = append(bad, fmt.Sprintf("%s: got %d %v %.80s, want %d", what, code, err, resp, want))
		}
	}
	e := registered(t.Name+"refused0", t.Name)
	try("no token", 401, "", ceJSON(e), e.ID)
	e = registered(t.Name+"refused1", t.Name)
	try("wrong token", 401, "nope", ceJSON(e), e.ID)
	e = event(t.Name+"refused2", 1, "UserPublishedAnArticle", map[string]string{"user_id": t.Name + "refused2", "article_id": "a", "title": "t", "body": strings.Repeat("x", 70000)})
	try("oversized body", 413, token, ceJSON(e), e.ID)
	try("malformed JSON", 400, token, []byte(`{"specversion":"1.0","id":"`+t.Name+`-malformed","type":`), t.Name+"-malformed")
	e = registered(t.Name+"refused4", t.Name)
	e.Source = ""
	try("missing source", 400, token, ceJSON(e), e.ID)
	e = registered(t.Name+"refused5", t.Name)
	dup := ceJSON(e)
	dup = append(dup[:len(dup)-1], []byte(`,"subject":"`+t.Name+`other"}`)...)
	try("duplicate JSON keys", 400, token, dup, e.ID)
	return refused, bad
}

// load runs clients, each posting its own aggregate's events in sequence for dur,
// and returns how many were accepted, answered otherwise, and failed in transport.
func (ic *ingest) load(ctx context.Context, clients int, dur time.Duration) (ok202, other, errs int64) {
	var n ingestCounts
	loadCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ic.runClient(ctx, loadCtx, fmt.Sprintf("%sh%04d", ic.t.Name, c), &n)
		}()
	}
	wg.Wait()
	return n.ok202.Load(), n.other.Load(), n.errs.Load()
}

type ingestCounts struct{ ok202, other, errs atomic.Int64 }

// runClient posts one aggregate's events, in sequence, until loadCtx ends; a client
// whose event fails four times stops (its next sequence would be a gap).
func (ic *ingest) runClient(ctx, loadCtx context.Context, subject string, n *ingestCounts) {
	for seq := uint64(1); loadCtx.Err() == nil; seq++ {
		ev := registered(subject, ic.t.Name)
		if seq > 1 {
			ev = passwordChanged(subject, seq)
		}
		if !ic.postOne(ctx, subject, ev, n) {
			return
		}
	}
}

// postOne posts ev, up to four times, recording each attempt; it reports whether
// it was accepted.
func (ic *ingest) postOne(ctx context.Context, subject string, ev events.Event, n *ingestCounts) bool {
	body := ceJSON(ev)
	for attempt := 0; attempt < 4 && ctx.Err() == nil; attempt++ {
		code, resp, err := ic.post(ctx, ic.token, "application/cloudevents+json", body)
		a := Attempt{EventID: ev.ID, Subject: subject, Outcome: Unknown, Offset: -1, At: time.Now()}
		if err == nil && code == 202 {
			var r struct {
				Results []struct {
					ID        string `json:"id"`
					Partition int    `json:"partition"`
					Offset    int64  `json:"offset"`
				} `json:"results"`
			}
			if json.Unmarshal(resp, &r) == nil && len(r.Results) == 1 && r.Results[0].ID == ev.ID {
				a.Outcome, a.Partition, a.Offset = OK, r.Results[0].Partition, r.Results[0].Offset
			}
			ic.t.Hist.Record(a)
			n.ok202.Add(1)
			return true
		}
		if err != nil {
			a.Err = err.Error()
			n.errs.Add(1)
		} else {
			a.Err = fmt.Sprintf("%d %.100s", code, resp)
			n.other.Add(1)
		}
		ic.t.Hist.Record(a)
	}
	return false
}

// 10. A network cut: the projector runs in its own network namespace, the servers
// on the host side of a veth pair; the link goes down for 10–60 s, twice.
func networkCut(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	// A mail server out of reach is waited for, as the runtime's own tests configure
	// it: with the default --effect-attempts 5 a cut parks the runs in flight after
	// about two seconds (the README says so), and they wait for a manual retry.
	p, err := t.StartProjector(ctx, "--effect-attempts", "1000")
	if err != nil {
		return Expect{}, err
	}
	cuts := []time.Duration{10 * time.Second}
	if t.P.Full {
		cuts = []time.Duration{time.Duration(10+t.Rng.IntN(20)) * time.Second, 60 * time.Second}
	}
	stop := t.Live(ctx, t.Generator(t.Rng.Uint64(), 200, "l"), 100, 300*time.Millisecond)
	defer stop()
	for i, d := range cuts {
		if err := t.waitProgress(ctx, 0.2+0.3*float64(i), t.P.Events); err != nil {
			return Expect{}, err
		}
		if err := t.Veth.Cut(ctx); err != nil {
			return Expect{}, err
		}
		t.R.Kills++
		// A commit already on the wire when the link went down may still land: the
		// position is taken once that has settled.
		_ = Sleep(ctx, 2*time.Second)
		at := t.Progress(ctx)
		_ = Sleep(ctx, d-2*time.Second)
		moved := t.Progress(ctx) - at
		if err := t.Veth.Heal(ctx); err != nil {
			return Expect{}, err
		}
		if err := alive(p); err != nil {
			return Expect{}, err
		}
		t.R.Note("cut %d: %v at %d; offsets moved by %d while cut (want 0)", i+1, d, at, moved)
		if moved != 0 {
			return Expect{}, fmt.Errorf("offsets moved by %d while the projector was cut off", moved)
		}
		if err := t.catchUp(ctx, fmt.Sprintf("link down %v", d)); err != nil {
			return Expect{}, err
		}
	}
	stop()
	// A cut longer than the lease and the session timeout cuts the ledger off between
	// a run and its mark, and ends the generation: the documented crash case — at
	// most one effect batch per partition runs again, with the same keys.
	return Expect{Effects: true, MaxRedelivered: len(cuts) * t.Partitions * effectBatch}, t.settle(ctx, p)
}
