package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

func runCmd(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return out.String() + errOut.String(), err
}

func brokersFlag(t *testing.T) string { return "--brokers=" + strings.Join(testenv.Kafka(t), ",") }

// decodeAll reads the topic's events, their personal fields decrypted.
func decodeAll(t *testing.T, topic string) []events.Event {
	t.Helper()
	var out []events.Event
	for _, m := range testenv.ReadAll(t, topic) {
		e, err := eventlog.FromMessage(m)
		if err != nil {
			t.Fatalf("%s/%d@%d: %v", topic, m.Partition, m.Offset, err)
		}
		out = append(out, e)
	}
	if err := shred.OpenAll(context.Background(), testenv.Keys(t), out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGenerateIsDeterministicForASeed(t *testing.T) {
	t.Parallel()
	a, b := testenv.UniqueName(t), testenv.UniqueName(t)
	for _, topic := range []string{a, b} {
		out, err := runCmd(t, "", "generate", brokersFlag(t), "--topic", topic, "--partitions", "4",
			"--events", "3000", "--users", "100", "--seed", "42", "--chunk", "700")
		if err != nil {
			t.Fatalf("generate: %v\n%s", err, out)
		}
	}
	ea, eb := decodeAll(t, a), decodeAll(t, b)
	if len(ea) != 3000 || len(eb) != 3000 {
		t.Fatalf("%d and %d events, want 3000 each", len(ea), len(eb))
	}
	for i := range ea {
		if ea[i].ID != eb[i].ID || !bytes.Equal(ea[i].Data, eb[i].Data) || !ea[i].Time.Equal(eb[i].Time) {
			t.Fatalf("event %d differs between two runs with seed 42:\n%+v\n%+v", i, ea[i], eb[i])
		}
	}
	// Per aggregate, sequences are 1, 2, 3, … in log order.
	seq := map[string]uint64{}
	for _, e := range ea {
		if e.Sequence != seq[e.Subject]+1 {
			t.Fatalf("%s: sequence %d after %d", e.Subject, e.Sequence, seq[e.Subject])
		}
		seq[e.Subject] = e.Sequence
	}
}

func TestSendOneEvent(t *testing.T) {
	t.Parallel()
	topic := testenv.UniqueName(t)
	out, err := runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--partitions", "3",
		"--type", "UserChangedPassword", "--subject", "user-1", "--sequence", "1", "--data", `{"user_id":"user-1","password_hash":"h"}`)
	if err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	var res struct {
		ID        string `json:"id"`
		Partition int    `json:"partition"`
		Offset    int64  `json:"offset"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	got := decodeAll(t, topic)
	if len(got) != 1 || got[0].ID != res.ID || got[0].Subject != "user-1" || string(got[0].Data) != `{"user_id":"user-1","password_hash":"h"}` {
		t.Fatalf("log holds %+v, send said %+v", got, res)
	}

	_, err = runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--type", "UserRegistered", "--data", `{}`)
	if err == nil || !strings.Contains(err.Error(), "subject") {
		t.Fatalf("send without a subject: %v", err)
	}
}

func TestImportStopsAtTheBadLineAndSaysWhatWasSent(t *testing.T) {
	t.Parallel()
	topic := testenv.UniqueName(t)
	var lines []string
	for i := 1; i <= 6; i++ {
		e := events.Event{ID: fmt.Sprintf("imp-%d", i), Source: "t", Type: "UserDeleted", Subject: fmt.Sprintf("user-%d", i), Data: json.RawMessage(`{}`)}
		b, _ := json.Marshal(e)
		lines = append(lines, string(b))
	}
	lines[4] = `{"id":"imp-5","source":"t","type":"UserDeleted","data":{}}` // line 5: no subject
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(t, "", "import", brokersFlag(t), "--topic", topic, "--partitions", "2", path)
	if err == nil || !strings.Contains(err.Error(), "line 5") || !strings.Contains(err.Error(), "subject") {
		t.Fatalf("err = %v, want line 5 and the subject named", err)
	}
	if !strings.Contains(out, "sent 4 events") || !strings.Contains(out, "nothing after line 4") {
		t.Fatalf("summary %q does not say what was sent", out)
	}
	got := decodeAll(t, topic)
	ids := map[string]bool{}
	for _, e := range got {
		ids[e.ID] = true
	}
	if len(got) != 4 || !ids["imp-1"] || !ids["imp-4"] || ids["imp-6"] {
		t.Fatalf("log holds %d events %v, want imp-1..imp-4", len(got), ids)
	}

	// --dry-run sends nothing, even when every line is good.
	dry := testenv.UniqueName(t)
	good := strings.Join(append(lines[:4:4], lines[5]), "\n")
	out, err = runCmd(t, good, "import", brokersFlag(t), "--topic", dry, "--dry-run", "-")
	if err != nil || !strings.Contains(out, "5 events valid; nothing sent") {
		t.Fatalf("dry run: %v %q", err, out)
	}
}

// ingestServer runs the ingest API against the real broker.
func ingestServer(t *testing.T, tokens ...string) (*httptest.Server, string) {
	t.Helper()
	topic := testenv.Topic(t, 3)
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	srv := httptest.NewServer(newIngest(ingestConfig{Tokens: tokens, MaxBody: 4096, PublishTimeout: 10 * time.Second}, pub))
	t.Cleanup(srv.Close)
	return srv, topic
}

func post(t *testing.T, url, token, contentType, body string, headers ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url+"/v1/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("status %d, body %q is not JSON", resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

const oneEvent = `{"specversion":"1.0","id":"h-1","source":"shop","type":"UserRegistered","subject":"user-1","sequence":"1","data":{"email":"a@example.test"}}`

func TestIngestAuth(t *testing.T) {
	t.Parallel()
	srv, _ := ingestServer(t, "s3cret", "other")
	for _, tok := range []string{"", "wrong", "s3cre", "s3cret2"} {
		if code, _ := post(t, srv.URL, tok, events.ContentTypeStructured, oneEvent); code != http.StatusUnauthorized {
			t.Errorf("token %q: status %d, want 401", tok, code)
		}
	}
	for _, tok := range []string{"s3cret", "other"} {
		if code, body := post(t, srv.URL, tok, events.ContentTypeStructured, oneEvent); code != http.StatusAccepted {
			t.Errorf("token %q: status %d %v, want 202", tok, code, body)
		}
	}
}

func TestIngestPublishesAndReportsOffsets(t *testing.T) {
	t.Parallel()
	srv, topic := ingestServer(t, "tok")
	batch := `[` + oneEvent + `,{"specversion":"1.0","id":"h-2","source":"shop","type":"UserRegistered","subject":"user-2","data":{"email":"b@example.test"}}]`
	code, body := post(t, srv.URL, "tok", events.ContentTypeBatch, batch)
	if code != http.StatusAccepted {
		t.Fatalf("batch: %d %v", code, body)
	}
	results := body["results"].([]any)
	if len(results) != 2 {
		t.Fatalf("results %v", results)
	}
	// Binary mode: attributes in ce-* headers.
	code, body = post(t, srv.URL, "tok", "application/json", `{"email":"c@example.test"}`,
		"Ce-Id", "h-3", "Ce-Source", "shop", "Ce-Type", "UserRegistered", "Ce-Subject", "user-3", "Ce-Specversion", "1.0")
	if code != http.StatusAccepted {
		t.Fatalf("binary mode: %d %v", code, body)
	}
	results = append(results, body["results"].([]any)...)

	logged := map[string]events.Event{}
	for _, e := range decodeAll(t, topic) {
		logged[e.ID] = e
	}
	for _, r := range results {
		m := r.(map[string]any)
		e, ok := logged[m["id"].(string)]
		if !ok {
			t.Fatalf("%v acknowledged but not in the log", m)
		}
		msgs := testenv.ReadAll(t, topic)
		found := false
		for _, msg := range msgs {
			if msg.Partition == int(m["partition"].(float64)) && msg.Offset == int64(m["offset"].(float64)) && string(msg.Key) == e.Subject {
				found = true
			}
		}
		if !found {
			t.Fatalf("%v: no message with key %s at that partition and offset", m, e.Subject)
		}
	}
	if e := logged["h-3"]; string(e.Data) != `{"email":"c@example.test"}` || e.Subject != "user-3" {
		t.Fatalf("binary-mode event logged as %+v", e)
	}
}

func TestIngestRefusesBadInputNamingTheProblem(t *testing.T) {
	t.Parallel()
	srv, topic := ingestServer(t, "tok")
	tests := []struct {
		name, ct, body string
		code           int
		field          string
		index          float64
	}{
		{"missing subject", events.ContentTypeStructured, `{"id":"x","source":"s","type":"T","data":{}}`, 400, "subject", -1},
		{"invalid JSON", "application/json", `{"id":`, 400, "event", -1},
		{"invalid UTF-8", "application/json", "{\"id\":\"\xff\"}", 400, "event", -1},
		{"NUL", events.ContentTypeStructured, `{"id":"x","source":"s","type":"T","subject":"u","data":{"a":"\u0000"}}`, 400, "event", -1},
		{"bad element in batch", events.ContentTypeBatch, `[` + oneEvent + `,{"id":"y","source":"s","subject":"u"}]`, 400, "type", 1},
		{"empty batch", events.ContentTypeBatch, `[]`, 400, "batch", -1},
		{"bad sequence", events.ContentTypeStructured, `{"id":"x","source":"s","type":"T","subject":"u","sequence":"-3"}`, 400, "sequence", -1},
		{"unsupported media", "text/plain", `hello`, 415, "Content-Type", -1},
		{"too large", events.ContentTypeStructured, `{"id":"` + strings.Repeat("x", 5000) + `"}`, 413, "", -1},
	}
	for _, tt := range tests {
		code, body := post(t, srv.URL, "tok", tt.ct, tt.body)
		if code != tt.code {
			t.Errorf("%s: status %d %v, want %d", tt.name, code, body, tt.code)
			continue
		}
		e, _ := body["error"].(map[string]any)
		if e == nil || e["problem"] == "" {
			t.Errorf("%s: body %v has no problem", tt.name, body)
			continue
		}
		if tt.field != "" && e["field"] != tt.field {
			t.Errorf("%s: field %v, want %s (%v)", tt.name, e["field"], tt.field, e)
		}
		if tt.index >= 0 && e["index"] != tt.index {
			t.Errorf("%s: index %v, want %v", tt.name, e["index"], tt.index)
		}
	}
	// The good event in the refused batch was not published either.
	if got := testenv.ReadAll(t, topic); len(got) != 0 {
		t.Fatalf("%d events in the log after refused requests", len(got))
	}
}

func TestIngestAnswers503WhenKafkaIsUnreachable(t *testing.T) {
	t.Parallel()
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "x", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	h := newIngest(ingestConfig{MaxBody: 4096, PublishTimeout: 2 * time.Second,
		Ready: func(ctx context.Context) error {
			_, err := eventlog.Partitions(ctx, []string{"127.0.0.1:1"}, "x")
			return err
		}}, pub)
	srv := httptest.NewServer(h)
	defer srv.Close()
	code, body := post(t, srv.URL, "", events.ContentTypeStructured, oneEvent)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d %v, want 503", code, body)
	}
	res := body["results"].([]any)[0].(map[string]any)
	if res["error"] == "" || res["offset"].(float64) != -1 {
		t.Fatalf("result %v does not say the event failed", res)
	}
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d with Kafka unreachable", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(m), `producer_events_total{outcome="failed"} 1`) || !strings.Contains(string(m), `producer_http_requests_total{code="503"}`) {
		t.Fatalf("metrics do not count the failure:\n%s", m)
	}
}

func TestServeRefusesToStartWithoutTokens(t *testing.T) {
	t.Parallel()
	_, err := runCmd(t, "", "serve", "--brokers", "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "PRODUCER_TOKENS") {
		t.Fatalf("err = %v", err)
	}
}

// With no command, producer prints its usage to standard error and exits 2 (the
// exit status of bad usage); --help is not an error.
func TestNoCommandPrintsUsageToStderrAndExits2(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), nil, strings.NewReader(""), &out, &errOut)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage || out.Len() != 0 || !strings.Contains(errOut.String(), "Usage: producer COMMAND") {
		t.Fatalf("run with no arguments: err %v, stdout %q, stderr %q; want exit 2 and the usage on stderr", err, out.String(), errOut.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"--help"}, strings.NewReader(""), &out, &errOut); err != nil || !strings.Contains(out.String(), "Usage: producer COMMAND") {
		t.Fatalf("--help: %v\n%s", err, out.String())
	}
}

// Every command's --help lists its flags; topic's lists both subcommands'.
func TestEveryCommandsHelpListsItsFlags(t *testing.T) {
	t.Parallel()
	for cmd, want := range map[string][]string{
		"send":     {"--brokers", "--type", "--subject"},
		"import":   {"--brokers", "--dry-run", "--chunk"},
		"generate": {"--brokers", "--events", "--seed"},
		"serve":    {"--brokers", "--listen"},
		"forget":   {"--brokers", "--reason"},
		"keygen":   {"Flags: none."},
		"check":    {"--brokers", "--from", "--deep"},
		"topic":    {"Flags of every topic subcommand:", "--brokers", "--json", "More flags of topic create:", "--partitions", "--replication-factor"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), []string{cmd, "--help"}, strings.NewReader(""), &out, &out)
		if err != nil && !errors.Is(err, cli.ErrHelp) {
			t.Errorf("%s --help: %v", cmd, err)
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s --help lacks %q:\n%s", cmd, w, out.String())
			}
		}
	}
}

// --dry-run validates the whole input: it reports every bad line, with its number
// and what is wrong, and fails when there is any. It never reaches Kafka.
func TestImportDryRunReportsEveryBadLine(t *testing.T) {
	t.Parallel()
	good := func(i int) string {
		b, _ := json.Marshal(events.Event{ID: fmt.Sprintf("dry-%d", i), Source: "t", Type: "UserDeleted", Subject: fmt.Sprintf("user-%d", i), Data: json.RawMessage(`{}`)})
		return string(b)
	}
	input := strings.Join([]string{
		good(1),
		`{"id":"dry-2","source":"t","type":"UserDeleted","data":{}}`, // line 2: no subject
		good(3),
		`not json`, // line 4
		"",         // blank lines are skipped, not bad
		`{"id":"dry-6","source":"t","type":"UserDeleted","subject":"user-6","data":{}` + strings.Repeat(" ", maxLineBytes) + `}`, // line 6: too long
		good(7),
	}, "\n") + "\n"
	out, err := runCmd(t, input, "import", "--brokers", "127.0.0.1:1", "--topic", "never-created", "--dry-run", "-")
	if err == nil || !strings.Contains(err.Error(), "3 bad lines") {
		t.Fatalf("err = %v, want 3 bad lines counted\n%s", err, out)
	}
	for _, want := range []string{"line 2: ", "subject", "line 4: ", "line 6: line longer than", "3 events valid, 3 lines bad", "nothing sent"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	for _, wrong := range []string{"line 1:", "line 3:", "line 5:", "line 7:"} {
		if strings.Contains(out, wrong) {
			t.Errorf("dry run reports a good line (%q):\n%s", wrong, out)
		}
	}
	t.Logf("producer import --dry-run:\n%s", out)
}

// A failure names what failed and where: the brokers, or the key store's database.
// Nothing here reaches a real server.
func TestErrorsNameTheBrokersAndTheDatabase(t *testing.T) {
	t.Parallel()
	const dead = "127.0.0.1:1"
	for _, args := range [][]string{
		{"send", "--type", "UserDeleted", "--subject", "u-1", "--data", "{}", "--plaintext-personal-data"},
		{"generate", "--events", "10", "--plaintext-personal-data"},
		{"check", "trips-unreachable"},
		{"topic", "create", "trips-unreachable"},
		{"topic", "describe", "trips-unreachable"},
	} {
		out, err := runCmd(t, "", append(args, "--brokers", dead, "--topic", "trips-unreachable")...)
		if err == nil || !strings.Contains(err.Error(), "kafka at "+dead+" (--brokers") {
			t.Errorf("producer %s with Kafka unreachable: err %v, want the brokers named\n%s", args[0], err, out)
		}
	}
	_, err := runCmd(t, "", "send", "--type", "UserDeleted", "--subject", "u-1", "--brokers", dead, "--master-key", shred.NewMasterKey(),
		"--database-url", "postgres://postgres:secret@"+dead+"/keys")
	if err == nil || !strings.Contains(err.Error(), "key store: database "+dead+"/keys (--database-url") || strings.Contains(err.Error(), "secret") {
		t.Errorf("producer send with the key store's database unreachable: err %v, want the database named (and no password)", err)
	}
}
