package servers

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// needInstalled skips a test that starts real servers when the binaries are not
// installed (or fails, under PROJECTOR_REQUIRE_STACK=1 as in make test and CI).
func needInstalled(t *testing.T, srv ...Server) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real servers")
	}
	for _, s := range srv {
		if err := s.Check(); err != nil {
			if os.Getenv("PROJECTOR_REQUIRE_STACK") == "1" {
				t.Fatal(err)
			}
			t.Skip(err)
		}
	}
}

// privateStack is a Stack under a folder of the test's own, on free ports: never
// the shared stack's.
func privateStack(t *testing.T) (Stack, []string) {
	t.Helper()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "projector-stack-test-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// As root, PostgreSQL runs as its own user, which must reach its folder.
	require.NoError(t, os.Chmod(dir, 0o755))
	s := Stack{StateDir: dir}
	env := []string{"PROJECTOR_STATE_DIR=" + dir, "PROJECTOR_NO_BROWSER=1"}
	settings := []struct {
		name string
		dst  *int
	}{
		{"KAFKA_PORT", &s.KafkaPort}, {"KAFKA_CONTROLLER_PORT", &s.KafkaControllerPort}, {"REDIS_PORT", &s.RedisPort},
		{"PG_PORT", &s.PGPort}, {"SMTP_PORT", &s.SMTPPort}, {"MAILPIT_HTTP_PORT", &s.MailpitHTTPPort},
	}
	ports, err := FreePorts(ctx, HostDefault, len(settings)) // six distinct ports
	require.NoError(t, err)
	for i, p := range settings {
		*p.dst = ports[i]
		env = append(env, p.name+"="+strconv.Itoa(*p.dst))
	}
	return s, env
}

// stackSh runs scripts/stack.sh with the private stack's settings.
func stackSh(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{"../../scripts/stack.sh"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Issue 17: two `scripts/stack.sh up` at once both succeed, and start one stack.
// Without the lock both formatted Kafka's storage, and one broker failed with
// "Invalid cluster.id … Expected G3eZ…, but read QoKf…".
func TestStackUpTwiceAtOnce(t *testing.T) {
	s, env := privateStack(t)
	needInstalled(t, s.Servers()...)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		out, err := stackSh(context.WithoutCancel(ctx), env, "down")
		if err != nil {
			t.Errorf("stack.sh down: %v\n%s", err, out)
		}
	})

	outs := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() { outs[i], errs[i] = stackSh(ctx, env, "up") })
	}
	wg.Wait()
	for i := range outs {
		require.NoError(t, errs[i], "up #%d:\n%s", i+1, outs[i])
	}
	t.Logf("the first up:\n%s\nthe second up:\n%s", outs[0], outs[1])
	both := outs[0] + outs[1]
	require.Equal(t, 1, strings.Count(both, "starting kafka"), both)
	require.Equal(t, 2, strings.Count(both, "stack: kafka    ok"), both)
	require.Equal(t, 4, strings.Count(both, "already running (pid"), "the second up finds each server running:\n%s", both)
	require.Contains(t, both, "waiting for another scripts/stack.sh", both)

	// One format, one cluster id, and the broker runs on it.
	meta, err := os.ReadFile(filepath.Join(s.StateDir, "kafka", "data", "meta.properties"))
	require.NoError(t, err)
	require.Contains(t, string(meta), "cluster.id=")
	for _, srv := range s.Servers() {
		_, ok := s.Pid(srv)
		require.True(t, ok, "%s runs", srv.Name())
	}
	got, err := os.ReadFile(s.EnvFile())
	require.NoError(t, err)
	key, err := os.ReadFile(filepath.Join(s.StateDir, "postgres", "master.key"))
	require.NoError(t, err)
	require.Equal(t, s.Env(strings.TrimSpace(string(key))), string(got))

	out, err := stackSh(ctx, env, "status")
	require.NoError(t, err, out)
	require.Equal(t, 4, strings.Count(out, " running  pid "), out)
	env2, err := stackSh(ctx, env, "env")
	require.NoError(t, err)
	require.Equal(t, string(got), env2)

	out, err = stackSh(ctx, env, "down")
	require.NoError(t, err, out)
	out, err = stackSh(ctx, env, "status")
	require.Error(t, err, "status exits 1 when a server is stopped")
	require.Equal(t, 4, strings.Count(out, " stopped"), out)
}
