package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
)

// startRun starts the projector binary's run with args, its output in the buffer.
func startRun(t *testing.T, args ...string) (*exec.Cmd, *testenv.SyncBuffer) {
	t.Helper()
	var out testenv.SyncBuffer
	cmd := exec.Command(binary, append([]string{"run", "--progress=false", "--effects", "none"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if os.Getenv("PROJECTOR_MASTER_KEY") == "" { // no stack: any well-formed key gets run past the check
		cmd.Env = append(os.Environ(), "PROJECTOR_MASTER_KEY="+strings.Repeat("ab", 32))
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &out
}

func healthz(addr string) (int, map[string]string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, nil
	}
	defer func() { _ = resp.Body.Close() }()
	var m map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// stopClean sends SIGTERM and wants exit status 0: stopping while start waits is a
// clean stop.
func stopClean(t *testing.T, cmd *exec.Cmd, out *testenv.SyncBuffer) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run exited with %v after SIGTERM while waiting; output:\n%s", err, out.String())
	}
}

// run with PostgreSQL or Kafka unreachable at start warns every few seconds, naming
// the address and the error, and /healthz answers 503 with the same reason; once
// what it waited for answers, /healthz turns 200.
func TestRunWaitingForItsServersWarnsAndHealthzSaysWhy(t *testing.T) {
	t.Parallel()
	const dead = "127.0.0.1:1"
	warnings := func(out *testenv.SyncBuffer, about string) int {
		n := 0
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, `"level":"warn"`) && strings.Contains(l, about) {
				n++
			}
		}
		return n
	}

	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		addr := testenv.FreeAddr(t)
		cmd, out := startRun(t, "--listen", addr, "--database-url", "postgres://postgres:secret@"+dead+"/nowhere")
		testenv.WaitFor(t, 30*time.Second, "two warnings naming the database", func() bool { return warnings(out, "database "+dead+"/nowhere") >= 2 })
		code, body := healthz(addr)
		if code != http.StatusServiceUnavailable || !strings.Contains(body["waiting"], "database "+dead+"/nowhere (--database-url") ||
			!strings.Contains(body["waiting"], "connection refused") || strings.Contains(out.String(), "secret") {
			t.Fatalf("/healthz with PostgreSQL unreachable: %d %v\n%s", code, body, out.String())
		}
		stopClean(t, cmd, out)
	})

	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		schema, projection := scratchProjection(t)
		addr := testenv.FreeAddr(t)
		cmd, out := startRun(t, "--listen", addr, "--brokers", dead, "--topic", "trips-unreachable",
			"--database-url", testenv.Get(t).DatabaseURL, "--schema", schema, "--projection", projection)
		testenv.WaitFor(t, 30*time.Second, "two warnings naming the broker", func() bool { return warnings(out, `"brokers":"`+dead+`"`) >= 2 })
		code, body := healthz(addr)
		if code != http.StatusServiceUnavailable || !strings.Contains(body["waiting"], "topic trips-unreachable on Kafka at "+dead) {
			t.Fatalf("/healthz with Kafka unreachable: %d %v\n%s", code, body, out.String())
		}
		stopClean(t, cmd, out)
	})

	t.Run("topic created later", func(t *testing.T) {
		t.Parallel()
		schema, projection := scratchProjection(t)
		topic := testenv.UniqueName(t)
		brokers := testenv.Kafka(t)
		t.Cleanup(func() {
			kc := eventlog.NewClient(brokers)
			defer kc.Close()
			_, _ = kc.Kafka().DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
		})
		addr := testenv.FreeAddr(t)
		cmd, out := startRun(t, "--listen", addr, "--brokers", strings.Join(brokers, ","), "--topic", topic,
			"--database-url", testenv.Get(t).DatabaseURL, "--schema", schema, "--projection", projection)
		testenv.WaitFor(t, 30*time.Second, "/healthz to say it waits for the topic", func() bool {
			code, body := healthz(addr)
			return code == http.StatusServiceUnavailable && strings.Contains(body["waiting"], "topic "+topic)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := testenv.CreateTopic(ctx, brokers, topic, 2); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 30*time.Second, "/healthz 200 once the topic exists", func() bool { code, _ := healthz(addr); return code == http.StatusOK })
		stopClean(t, cmd, out)
	})
}

// With --startup-timeout, run gives up when still waiting then: exit 1, naming what
// it waited for.
func TestRunGivesUpAfterTheStartupTimeout(t *testing.T) {
	t.Parallel()
	const dead = "127.0.0.1:1"
	schema, projection := scratchProjection(t)
	for name, args := range map[string][]string{
		"postgres": {"--database-url", "postgres://postgres@" + dead + "/nowhere"},
		"kafka": {"--brokers", dead, "--topic", "trips-unreachable", "--database-url", testenv.Get(t).DatabaseURL, "--schema", schema,
			"--projection", projection},
	} {
		began := time.Now()
		cmd, out := startRun(t, append([]string{"--listen", testenv.FreeAddr(t), "--startup-timeout", "3s"}, args...)...)
		err := cmd.Wait()
		took := time.Since(began)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out.String(), "gave up after --startup-timeout 3s") ||
			!strings.Contains(out.String(), dead) || took > 20*time.Second {
			t.Fatalf("%s unreachable, --startup-timeout 3s: %v after %v\n%s", name, err, took, out.String())
		}
		t.Logf("%s unreachable: gave up after %v: %s", name, took.Round(100*time.Millisecond), lastLine(out.String()))
	}
}

// scratchProjection returns a framework schema and a projection name of the test's
// own; the projection's schema (NAME_v1), which run creates, is dropped at the end.
func scratchProjection(t *testing.T) (schema, projection string) {
	t.Helper()
	pool, schema := testenv.Postgres(t)
	var b [5]byte
	_, _ = crand.Read(b[:])
	projection = "p" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{projection + "_v1"}.Sanitize()+" CASCADE")
	})
	return schema, projection
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
