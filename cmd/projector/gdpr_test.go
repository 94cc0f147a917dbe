package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/service"
)

var (
	producerOnce sync.Once
	producerBin  string
	producerErr  error
)

// producerBinary builds cmd/producer beside the projector binary, once.
func producerBinary(t *testing.T) string {
	t.Helper()
	producerOnce.Do(func() {
		producerBin = filepath.Join(filepath.Dir(binary), "producer")
		if out, err := exec.Command("go", "build", "-o", producerBin, "github.com/projector/projector/cmd/producer").CombinedOutput(); err != nil {
			producerErr = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if producerErr != nil {
		t.Fatalf("build producer: %v", producerErr)
	}
	return producerBin
}

// producer runs a producer command against the fixture's topic.
func (f *procFixture) producer(args ...string) string {
	f.t.Helper()
	args = append(args, "--brokers", strings.Join(testenv.Kafka(f.t), ","), "--topic", f.topic,
		"--database-url", testenv.Get(f.t).DatabaseURL, "--log-level", "warn")
	if f.keySchema != "" {
		args = append(args, "--key-schema", f.keySchema)
	}
	out, err := exec.Command(producerBinary(f.t), args...).CombinedOutput()
	if err != nil {
		f.t.Fatalf("producer %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// projector runs a projector command (not run) for the fixture's projection, as an
// operator would, and returns its output and error (an *exec.ExitError for a
// non-zero exit).
func (f *procFixture) projector(args ...string) (string, error) {
	f.t.Helper()
	args = append(args, "--brokers", strings.Join(testenv.Kafka(f.t), ","), "--topic", f.topic,
		"--database-url", testenv.Get(f.t).DatabaseURL, "--schema", f.schema, "--projection", f.projection.Name(), "--log-level", "warn")
	if f.keySchema != "" {
		args = append(args, "--key-schema", f.keySchema)
	}
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

// historyTopic creates a topic that keeps its history (retention.ms=-1), as the
// producer wants it, and deletes it when the test ends.
func historyTopic(t *testing.T, partitions int) string {
	t.Helper()
	name := testenv.UniqueName(t) + "_h"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := eventlog.EnsureTopic(ctx, testenv.Kafka(t), eventlog.TopicConfig{Name: name, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		client := eventlog.NewClient(testenv.Kafka(t))
		defer client.Close()
		_, _ = client.Kafka().DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
	})
	return name
}

// filesHolding lists the files under dir whose bytes contain text.
func filesHolding(t *testing.T, dir, text string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted by a rewrite while we walked
		}
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(text)) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return hits
}

// rowsHolding counts the rows of the projection's tables and the framework's that
// contain text.
func (f *procFixture) rowsHolding(text string) int {
	f.t.Helper()
	ctx := context.Background()
	rows, err := f.pool.Query(ctx, `SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ($1, $2)`, f.projection.Schema(), f.schema)
	if err != nil {
		f.t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgx.Identifier, error) {
		var s, n string
		err := r.Scan(&s, &n)
		return pgx.Identifier{s, n}, err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	total := 0
	for _, id := range names {
		var n int
		if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM `+id.Sanitize()+` x WHERE strpos(x::text, $1) > 0`, text).Scan(&n); err != nil {
			f.t.Fatal(err)
		}
		total += n
	}
	return total
}

// The proof, through the CLIs only: a snapshot taken by `snapshot create`
// into the folder of a `projector run` that has no snapshot policy loses every byte
// of a forgotten user's email within seconds of `producer forget`, with the run
// going; the read model too; a control user's email stays in both; the log holds
// ciphertext only. A forgetting while no run is going shows in `snapshot list` and
// as a warning in `status`, and the next run's start clears it.
func TestForgottenUserLeavesEverySnapshotWithoutAnOperatorStep(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	testenv.MasterKey(t) // every command below reads it from the environment
	f := newProcFixture(t, 4)
	f.topic = historyTopic(t, 4) // the producer refuses a topic that would delete history
	// A key store of its own: a forgetting by another test in a shared one would
	// make every snapshot here "may hold" again until the next rewrite.
	f.keySchema = "keys_" + testenv.UniqueName(t)
	t.Cleanup(func() {
		_, _ = f.pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{f.keySchema}.Sanitize()+" CASCADE")
	})
	var b [4]byte
	_, _ = crand.Read(b[:])
	prefix := "gdpr" + hex.EncodeToString(b[:])
	f.producer("generate", "--events", "3000", "--users", "300", "--seed", "18", "--prefix", prefix, "--start", "now")
	dir := t.TempDir()
	run := f.start("run", "--snapshot-dir", dir) // no --snapshot-every*, no --snapshot-on
	testenv.WaitFor(t, 2*time.Minute, "the run to catch up", func() bool { return f.progress() >= 3000 })

	// Three users with their email in the read model: two to forget, one control.
	rows, err := f.pool.Query(context.Background(), `SELECT user_id, email FROM `+pgx.Identifier{f.projection.Schema()}.Sanitize()+
		`.users WHERE email LIKE '%@%' ORDER BY user_id LIMIT 3`)
	if err != nil {
		t.Fatal(err)
	}
	type user struct{ id, email string }
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (user, error) {
		var u user
		return u, r.Scan(&u.id, &u.email)
	})
	if err != nil || len(users) != 3 {
		t.Fatalf("users with an email: %v %v", users, err)
	}
	victim, later, control := users[0], users[1], users[2]

	out, err := f.projector("snapshot", "create", "--snapshot-dir", dir)
	if err != nil {
		t.Fatalf("snapshot create: %v\n%s", err, out)
	}
	for _, u := range users {
		if len(filesHolding(t, dir, u.email)) == 0 {
			t.Fatalf("the snapshot does not hold %s's email: the search cannot be trusted", u.id)
		}
	}
	for _, m := range testenv.ReadAll(t, f.topic) {
		for _, u := range users {
			if bytes.Contains(m.Value, []byte(u.email)) {
				t.Fatalf("the log holds %s's email in the clear (partition %d offset %d)", u.id, m.Partition, m.Offset)
			}
		}
	}

	// 1. Forgotten while the run is going: no operator step, no snapshot policy.
	f.producer("forget", victim.id, "--reason", "test")
	forgotAt := time.Now()
	testenv.WaitFor(t, 10*time.Second, "the victim's email gone from the snapshot folder and the read model", func() bool {
		return len(filesHolding(t, dir, victim.email)) == 0 && f.rowsHolding(victim.email) == 0
	})
	t.Logf("forgotten user's email gone from the snapshot folder and the read model %v after `producer forget`", time.Since(forgotAt).Round(10*time.Millisecond))
	if len(filesHolding(t, dir, control.email)) == 0 || f.rowsHolding(control.email) == 0 {
		t.Fatal("the control user's email is gone too: the purge is not about the forgotten user")
	}
	var list []struct {
		ID                string    `json:"id"`
		Rewrites          string    `json:"rewrites"`
		ScrubbedThrough   time.Time `json:"scrubbed_through"`
		ForgottenSubjects int       `json:"forgotten_subjects"`
	}
	out, err = f.projector("snapshot", "list", "--snapshot-dir", dir, "--json")
	if jerr := json.Unmarshal([]byte(out), &list); err != nil || jerr != nil || len(list) != 1 || list[0].Rewrites == "" || list[0].ForgottenSubjects != 0 {
		t.Fatalf("snapshot list after the scrub: %v %v\n%s", err, jerr, out)
	}
	run.stop(t)

	// 2. Forgotten while no run is going: list and status say which snapshot still
	// holds the data, and the next run's start rewrites it.
	out, err = f.projector("snapshot", "create", "--snapshot-dir", dir)
	if err != nil {
		t.Fatalf("snapshot create: %v\n%s", err, out)
	}
	f.producer("forget", later.id)
	if len(filesHolding(t, dir, later.email)) == 0 {
		t.Fatal("the snapshots do not hold the second user's email before any run: the search cannot be trusted")
	}
	out, err = f.projector("snapshot", "list", "--snapshot-dir", dir)
	if err != nil || !strings.Contains(out, "MAY HOLD FORGOTTEN") || !strings.Contains(out, "may still hold data of forgotten subjects") {
		t.Fatalf("snapshot list with a snapshot to scrub: %v\n%s", err, out)
	}
	t.Logf("snapshot list, a forgetting after the snapshots, no run going:\n%s", out)
	var st service.StatusReport
	out, err = f.projector("status", "--snapshot-dir", dir, "--interval", "0", "--json")
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil || len(st.SnapshotsHoldingForgotten) == 0 {
		t.Fatalf("status --json: %v %v\n%s", err, jerr, out)
	}
	if out, _ = f.projector("status", "--snapshot-dir", dir, "--interval", "0"); !strings.Contains(out, "warning:") {
		t.Fatalf("status does not warn about the snapshots:\n%s", out)
	}
	started := time.Now()
	run = f.start("run2", "--snapshot-dir", dir)
	testenv.WaitFor(t, 10*time.Second, "the second user's email gone from the snapshot folder and the read model", func() bool {
		return len(filesHolding(t, dir, later.email)) == 0 && f.rowsHolding(later.email) == 0
	})
	t.Logf("a forgetting while no run was going: gone %v after the run started", time.Since(started).Round(10*time.Millisecond))
	for _, u := range []user{victim, later} {
		if hits := filesHolding(t, dir, u.email); len(hits) > 0 {
			t.Fatalf("%s's email is back in %v", u.id, hits)
		}
	}
	if len(filesHolding(t, dir, control.email)) == 0 || f.rowsHolding(control.email) == 0 {
		t.Fatal("the control user's email is gone")
	}
	testenv.WaitFor(t, 10*time.Second, "status --ready-lag 0 to pass without a warning", func() bool {
		out, err = f.projector("status", "--snapshot-dir", dir, "--interval", "0", "--ready-lag", "0")
		return err == nil && !strings.Contains(out, "warning:")
	})
	run.stop(t)
}
