package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/shred"
)

func TestBadSettingsAreRefusedByName(t *testing.T) {
	t.Setenv("PROJECTOR_BATCH_SIZE", "lots")
	var out bytes.Buffer
	err := run(context.Background(), []string{"run"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "PROJECTOR_BATCH_SIZE") {
		t.Fatalf("err = %v, want PROJECTOR_BATCH_SIZE named", err)
	}
	t.Setenv("PROJECTOR_BATCH_SIZE", "")
	for args, want := range map[string]string{
		"run --gaps sometimes":          "--gaps",
		"run --unknown-types explode":   "--unknown-types",
		"run --batch-size 0":            "--batch-size",
		"run --fold-rows -5":            "--fold-rows",
		"run --drain-timeout -1s":       "--drain-timeout",
		"run --memory-limit 150MB":      "--memory-limit",
		"run --projection Users":        "--projection",
		"run --database-url ::nonsense": "--database-url",
		"status --log-level loud":       "",
		"frobnicate":                    "unknown command",
	} {
		err := run(context.Background(), strings.Fields(args), &out, &out)
		if err == nil || (want != "" && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: err = %v, want %q named", args, err, want)
		}
	}
}

func TestRunServesReadinessStatusAndQueries(t *testing.T) {
	t.Parallel()
	f := newProcFixture(t, 3)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 9, Users: 50})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 3000)
	addr, stop := f.runInProcess()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, nil
		}
		defer func() { _ = resp.Body.Close() }()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	testenv.WaitFor(t, time.Minute, "/readyz to answer 200", func() bool { code, _ := get("/readyz"); return code == 200 })
	// Ready means lag under --ready-lag; the queries below want the whole log applied.
	testenv.WaitFor(t, time.Minute, "lag 0", func() bool { _, st := get("/status"); return st != nil && st["lag"] == float64(0) })
	code, stats := get("/v1/stats")
	if code != 200 || stats["users"] == nil {
		t.Fatalf("/v1/stats: %d %v", code, stats)
	}
	code, st := get("/status")
	if code != 200 || st["ready"] != true || len(st["partitions"].([]any)) != 3 {
		t.Fatalf("/status: %d %v", code, st)
	}
	code, list := get("/v1/users?limit=1")
	users, _ := list["users"].([]any)
	if code != 200 || len(users) != 1 {
		t.Fatalf("/v1/users?limit=1: %d %v", code, list)
	}
	id := users[0].(map[string]any)["user_id"].(string)
	code, u := get("/v1/users/" + id)
	if code != 200 || u["user"].(map[string]any)["user_id"] != id || u["articles"] == nil {
		t.Fatalf("/v1/users/%s: %d %v", id, code, u)
	}
	if code, _ := get("/v1/users/nobody"); code != 404 {
		t.Fatalf("unknown user: %d", code)
	}
	if code, _ := get("/v1/users?limit=0"); code != 400 {
		t.Fatalf("limit=0: %d", code)
	}
	var out bytes.Buffer
	err = run(context.Background(), []string{"status", "--brokers", strings.Join(testenv.Kafka(t), ","), "--topic", f.topic,
		"--database-url", testenv.Get(t).DatabaseURL, "--schema", f.schema, "--projection", f.projection.Name(), "--interval", "0"}, &out, &out)
	if err != nil || !strings.Contains(out.String(), "ready: every partition's lag is at most 1000") || len(liveRows.FindAllString(out.String(), -1)) != 3 {
		t.Fatalf("projector status: %v\n%s", err, out.String())
	}
	stop()
}

var liveRows = regexp.MustCompile(`(?m)^\s*\d+\s+live\s`)

// status applies the --ready-lag it is given, per partition, to the stored positions
// and the log ends, says which rule it used, and exits 3 until ready.
func TestStatusAppliesTheReadyLagItIsGiven(t *testing.T) {
	t.Parallel()
	f := newProcFixture(t, 4)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 19, Users: 200})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 1000)
	_, stop := f.runInProcess()
	testenv.WaitFor(t, time.Minute, "the first 1000 events applied", func() bool { return f.progress() >= 1000 })
	stop()
	f.publish(g, 2000) // every partition now has a stored position, and lag behind it
	status := func(extra ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"status", "--brokers", strings.Join(testenv.Kafka(t), ","), "--topic", f.topic,
			"--database-url", testenv.Get(t).DatabaseURL, "--schema", f.schema, "--projection", f.projection.Name(), "--interval", "0"}, extra...), &out, &out)
		return out.String(), err
	}
	out, err := status("--ready-lag", "0")
	var code exitCode
	if !errors.As(err, &code) || code != 3 {
		t.Fatalf("status --ready-lag 0 with 2000 events unapplied: err %v, want exit 3\n%s", err, out)
	}
	if !strings.Contains(out, "NOT READY: 4 of 4 partitions are not live") || !strings.Contains(out, "rule: --ready-lag 0, per partition") ||
		len(liveRows.FindAllString(out, -1)) != 0 || strings.Count(out, " > 0 ") != 4 {
		t.Fatalf("status --ready-lag 0 must say which rule failed, per partition:\n%s", out)
	}
	t.Logf("status --ready-lag 0 (exit %d):\n%s", code, out)
	out, err = status("--ready-lag", "0", "--json")
	var st projector.Status
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil || !errors.As(err, &code) || st.Ready || st.ReadyLag != 0 || st.Lag != 2000 || st.ReadyRule == "" {
		t.Fatalf("status --ready-lag 0 --json: %v %v\n%s", err, jerr, out)
	}
	// The same positions pass a looser rule, and the report says so.
	if out, err := status("--ready-lag", "2000"); err != nil || !strings.Contains(out, "ready: every partition's lag is at most 2000") ||
		len(liveRows.FindAllString(out, -1)) != 4 {
		t.Fatalf("status --ready-lag 2000: %v\n%s", err, out)
	}
	if _, err := status("--ready-lag", "-1"); err == nil || !strings.Contains(err.Error(), "--ready-lag") {
		t.Fatalf("--ready-lag -1: %v, want refused by name", err)
	}
	// Caught up: ready by the strictest rule.
	_, stop = f.runInProcess()
	testenv.WaitFor(t, time.Minute, "every event applied", func() bool { return f.progress() >= 3000 })
	if out, err := status("--ready-lag", "0"); err != nil || !strings.Contains(out, "ready: every partition's lag is at most 0") {
		t.Fatalf("status --ready-lag 0 once caught up: %v\n%s", err, out)
	}
	stop()
}

// The master key is checked at start: missing (the example's events carry personal
// data), malformed, or not the one the key store was made with.
func TestMasterKeyIsRefusedAtStart(t *testing.T) {
	testenv.Keys(t) // the key store exists, made with the stack's master key
	db := "--database-url=" + testenv.Get(t).DatabaseURL
	var out bytes.Buffer
	for _, c := range []struct{ args, want string }{
		{"run --master-key=", "PROJECTOR_MASTER_KEY"},
		{"run --master-key=tooshort", "32 bytes"},
		{"run --listen=127.0.0.1:0 --master-key=" + shred.NewMasterKey(), "does not open this key store"},
		{"replay --until 0:1 --into x --master-key=" + shred.NewMasterKey(), "does not open this key store"},
		{"snapshot scrub --master-key=", "PROJECTOR_MASTER_KEY"},
	} {
		t.Setenv(shred.MasterKeyEnv, "")
		err := run(context.Background(), append(strings.Fields(c.args), db), &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.args, err, c.want)
		}
	}
}
