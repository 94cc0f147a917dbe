package servers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// privateDir is a folder PostgreSQL's OS user can reach (t.TempDir's is 0700).
func privateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "projector-servers-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func port(t *testing.T) int {
	t.Helper()
	return ports(t, 1)[0]
}

// ports returns n distinct free ports (a server that listens on two).
func ports(t *testing.T, n int) []int {
	t.Helper()
	p, err := FreePorts(context.Background(), HostDefault, n)
	require.NoError(t, err)
	return p
}

// Each private server starts from its description, answers, and — as the chaos
// suite and the tests use it — comes back after a kill or a stop on its own data.
func TestPrivateServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel) // after the parallel subtests

	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		dir := privateDir(t)
		kp := ports(t, 2)
		k := Kafka{Port: kp[0], ControllerPort: kp[1], Dir: dir}
		needInstalled(t, k)
		p, err := Start(ctx, k, filepath.Join(dir, "kafka.log"), 2*time.Minute)
		require.NoError(t, err)
		meta, err := os.ReadFile(filepath.Join(dir, "data", "meta.properties"))
		require.NoError(t, err)
		p.Kill()
		// Restarted on the same folder: no second format, the same cluster.
		p, err = Start(ctx, k, filepath.Join(dir, "kafka.log"), 2*time.Minute)
		require.NoError(t, err)
		defer p.Kill()
		again, err := os.ReadFile(filepath.Join(dir, "data", "meta.properties"))
		require.NoError(t, err)
		require.Equal(t, string(meta), string(again))
		// A JVM ended by SIGTERM exits 143 after its shutdown hooks: not a kill.
		require.NotErrorIs(t, p.Term(time.Minute), ErrKilled)
	})

	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dir := privateDir(t)
		pg := Postgres{Port: port(t), Dir: dir}
		needInstalled(t, pg)
		p, err := Start(ctx, pg, filepath.Join(dir, "log"), time.Minute)
		require.NoError(t, err)
		defer p.Kill()
		exec := func(sql string) {
			conn, err := pgx.Connect(ctx, pg.URL())
			require.NoError(t, err)
			defer func() { _ = conn.Close(ctx) }()
			_, err = conn.Exec(ctx, sql)
			require.NoError(t, err)
		}
		exec(`CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)`)
		if os.Geteuid() == 0 {
			st, err := os.Stat(pg.DataDir())
			require.NoError(t, err)
			require.NotZero(t, st.Sys().(*syscall.Stat_t).Uid, "the cluster belongs to its OS user, not root")
		}
		// Immediate (as a crash): the postmaster's pid is the process's.
		sig, err := PGStopSignal("immediate")
		require.NoError(t, err)
		require.NotErrorIs(t, p.Stop(sig, time.Minute), ErrKilled)
		p, err = Start(ctx, pg, filepath.Join(dir, "log"), time.Minute)
		require.NoError(t, err)
		defer p.Kill()
		exec(`SELECT 1 FROM kept`)
		sig, _ = PGStopSignal("fast")
		require.NoError(t, p.Stop(sig, time.Minute))
	})

	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		r := Redis{Port: port(t), Dir: t.TempDir()}
		needInstalled(t, r)
		p, err := Start(ctx, r, filepath.Join(r.Dir, "redis.log"), 30*time.Second)
		require.NoError(t, err)
		c := redis.NewClient(&redis.Options{Addr: r.Addr()})
		defer func() { _ = c.Close() }()
		require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
		p.Kill()
		p, err = Start(ctx, r, filepath.Join(r.Dir, "redis.log"), 30*time.Second)
		require.NoError(t, err)
		defer p.Kill()
		// Private: nothing survives a kill.
		require.ErrorIs(t, c.Get(ctx, "k").Err(), redis.Nil)
	})

	t.Run("mailpit", func(t *testing.T) {
		t.Parallel()
		mp := ports(t, 2)
		m := Mailpit{SMTPPort: mp[0], HTTPPort: mp[1], Dir: t.TempDir()}
		needInstalled(t, m)
		p, err := Start(ctx, m, filepath.Join(m.Dir, "mailpit.log"), 30*time.Second)
		require.NoError(t, err)
		require.NoError(t, p.Term(30*time.Second))
		log, err := os.ReadFile(filepath.Join(m.Dir, "mailpit.log"))
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(string(log), "---- start mailpit at "), string(log))
	})
}

// A server that exits while starting is reported at once, with its log.
func TestWaitReadyReportsAnExit(t *testing.T) {
	r := Redis{Port: port(t), Dir: filepath.Join(t.TempDir(), "missing")}
	needInstalled(t, r)
	start := time.Now()
	_, err := Start(context.Background(), r, filepath.Join(t.TempDir(), "redis.log"), time.Minute)
	require.ErrorContains(t, err, "redis exited while starting")
	require.Less(t, time.Since(start), 30*time.Second)
}
