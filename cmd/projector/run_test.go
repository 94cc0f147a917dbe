package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
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
		"run --drain-timeout -1s":       "--drain-timeout",
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
	waitFor(t, time.Minute, "/readyz to answer 200", func() bool { code, _ := get("/readyz"); return code == 200 })
	// Ready means lag under --ready-lag; the queries below want the whole log applied.
	waitFor(t, time.Minute, "lag 0", func() bool { _, st := get("/status"); return st != nil && st["lag"] == float64(0) })
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
	if err != nil || !strings.Contains(out.String(), "ready true") || strings.Count(out.String(), "live") != 3 {
		t.Fatalf("projector status: %v\n%s", err, out.String())
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
		{"run --master-key=" + shred.NewMasterKey(), "does not open this key store"},
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
