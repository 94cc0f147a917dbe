package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

// These tests run the projector as real processes and kill, stop and resume them by
// pid, against the real stack.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "projector-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "projector")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build projector: %v\n%s", err, out)
		os.Exit(1)
	}
	// Every goroutine a test starts (runs in this process included) must be gone
	// when the tests end: goleak fails the run otherwise.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

type procFixture struct {
	t          *testing.T
	topic      string
	pool       *pgxpool.Pool
	schema     string
	projection *readmodel.Projection
	logs       string
	fxArgs     []string // effect settings; none unless a test sets them
	keySchema  string   // the key store's schema, when the test has one of its own
}

func newProcFixture(t *testing.T, partitions int) *procFixture {
	t.Helper()
	topic := testenv.Topic(t, partitions)
	pool, schema := testenv.Postgres(t)
	var b [5]byte
	_, _ = crand.Read(b[:])
	name := "p" + hex.EncodeToString(b[:])
	p, err := domain.NewProjection(name, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{p.Schema()}.Sanitize()+" CASCADE")
	})
	f := &procFixture{t: t, topic: topic, pool: pool, schema: schema, projection: p, logs: t.TempDir()}
	// Set the tables up now, so the audit trigger can watch every offset write.
	r, err := projector.New(projector.Config{Brokers: testenv.Kafka(t), Topic: topic, Projection: p, Pool: pool, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	fw := pgx.Identifier{schema}.Sanitize()
	for _, q := range []string{
		`CREATE TABLE ` + fw + `.audit (id bigserial PRIMARY KEY, partition int, member text, generation int,
			old_next bigint, new_next bigint, at timestamptz DEFAULT clock_timestamp())`,
		`CREATE FUNCTION ` + fw + `.audit_offsets() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN
		   INSERT INTO ` + fw + `.audit (partition, member, generation, old_next, new_next)
		   VALUES (NEW.partition, NEW.member, NEW.generation, CASE WHEN TG_OP = 'UPDATE' THEN OLD.next_offset END, NEW.next_offset);
		   RETURN NEW;
		 END $$`,
		`CREATE TRIGGER audit AFTER INSERT OR UPDATE ON ` + fw + `.offsets FOR EACH ROW EXECUTE FUNCTION ` + fw + `.audit_offsets()`,
	} {
		if _, err := pool.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// publish generates n events of the example domain into the topic.
func (f *procFixture) publish(g *domain.Generator, n int) {
	f.t.Helper()
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(f.t), Topic: f.topic})
	if err != nil {
		f.t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	evs := make([]events.Event, 0, 5000)
	for i := 0; i < n; i++ {
		evs = append(evs, g.Next())
		if len(evs) == cap(evs) || i == n-1 {
			if _, err := pub.Publish(context.Background(), evs...); err != nil {
				f.t.Fatal(err)
			}
			evs = evs[:0]
		}
	}
}

type proc struct {
	cmd *exec.Cmd
	log string
}

// start runs `projector run` for the fixture's projection as a separate process.
func (f *procFixture) start(name string, extra ...string) *proc {
	f.t.Helper()
	logPath := filepath.Join(f.logs, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	args := append([]string{"run", "--brokers", strings.Join(testenv.Kafka(f.t), ","), "--topic", f.topic,
		"--database-url", testenv.Get(f.t).DatabaseURL, "--schema", f.schema, "--projection", f.projection.Name(),
		"--group", "g-" + f.projection.Name(), "--listen", "127.0.0.1:0", "--progress=false",
		"--session-timeout", "6s", "--heartbeat", "500ms", "--batch-size", "200"}, extra...)
	if f.fxArgs != nil {
		args = append(args, f.fxArgs...)
	} else {
		args = append(args, "--effects", "none")
	}
	if f.keySchema != "" {
		args = append(args, "--key-schema", f.keySchema)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	_ = out.Close()
	p := &proc{cmd: cmd, log: logPath}
	f.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return p
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("projector exited with %v; log %s:\n%s", err, p.log, tail(p.log, 30))
		}
	case <-time.After(60 * time.Second):
		t.Errorf("projector did not stop within 60 s of SIGTERM")
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (f *procFixture) progress() int64 {
	var sum int64
	_ = f.pool.QueryRow(context.Background(), `SELECT coalesce(sum(next_offset), 0) FROM `+pgx.Identifier{f.schema}.Sanitize()+`.offsets
		WHERE projection = $1`, f.projection.Name()).Scan(&sum)
	return sum
}

func (f *procFixture) assertEqualsFold() {
	f.t.Helper()
	var evs []events.Event
	for _, m := range testenv.ReadAll(f.t, f.topic) {
		e, err := eventlog.FromMessage(m)
		if err != nil {
			f.t.Fatal(err)
		}
		evs = append(evs, e)
	}
	want, err := domain.Fold(domain.Registry(), evs)
	if err != nil {
		f.t.Fatal(err)
	}
	got, err := domain.Load(context.Background(), f.pool, f.projection.Schema())
	if err != nil {
		f.t.Fatal(err)
	}
	if d := domain.Diff(want, got, 10); d != "" {
		f.t.Fatalf("read model differs from the fold of the log: %s", d)
	}
	f.t.Logf("read model equals the fold of %d events: %d users, %d articles", len(evs), len(want.Users), len(want.Articles))
}

// assertOffsetsNeverWentBack checks every audited write of the offsets table.
func (f *procFixture) assertOffsetsNeverWentBack() int {
	f.t.Helper()
	var bad, n int
	err := f.pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE new_next < old_next), count(*) FROM `+
		pgx.Identifier{f.schema}.Sanitize()+`.audit`).Scan(&bad, &n)
	if err != nil {
		f.t.Fatal(err)
	}
	if bad > 0 {
		f.t.Fatalf("%d of %d offset writes went back", bad, n)
	}
	return n
}

func TestSIGKILLMidBatchThenRestartEqualsFold(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newProcFixture(t, 4)
	// The welcome email runs too: every kill may land between a mail and its ledger mark.
	var b [4]byte
	_, _ = crand.Read(b[:])
	prefix := "kill" + hex.EncodeToString(b[:])
	mail := testenv.MailpitServer(t)
	// Folds of a few reads (a partition's 125 users and their sequence marks fill
	// 200 rows within about a thousand events), so that kills land inside folds
	// and between them, not after a replay done in one fold per partition.
	f.fxArgs = []string{"--redis-url", testenv.Get(t).RedisURL, "--ledger-namespace", prefix, "--smtp-addr", mail.SMTPAddr,
		"--effect-lease", "2s", "--effect-concurrency", "2", "--fold-rows", "200"}
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 3, Users: 500, Start: time.Now().UTC(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 60000)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for range 6 {
		before := f.progress()
		p := f.start("run")
		// Kill at a random point after the worker has made progress, so the kill
		// lands in the middle of the stream, mostly inside a batch transaction.
		testenv.WaitFor(t, 60*time.Second, "progress after restart", func() bool { return f.progress() > before })
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		if f.progress() >= 60000 {
			p.kill(t)
			break
		}
		p.kill(t)
		kills++
		if kills == 3 {
			f.publish(g, 5000) // live traffic between crashes
		}
	}
	t.Logf("SIGKILLed the projector %d times mid-replay, at %d of 65000", kills, f.progress())
	if kills < 3 {
		t.Fatalf("only %d kills landed before the replay finished: the test did not test", kills)
	}
	p := f.start("final")
	final := time.Now()
	testenv.WaitFor(t, 2*time.Minute, "the replay to complete", func() bool { return f.progress() >= 65000 })
	replayed := time.Since(final)
	regs := f.registrations(prefix)
	// The effects catch up after the replay, beside every other package's tests in
	// make test: alone here 1,776 mails took well under a minute; in CI the wait
	// ran out at 2 minutes twice on 2026-12-02 (the replay done, mails still coming).
	testenv.WaitFor(t, 4*time.Minute, "every welcome mail", func() bool { return len(distinct(mail.Messages(t, "@"+prefix+".example.test"))) >= len(regs) })
	// How long each wait took, for the next time one runs out (the mails' did in CI).
	t.Logf("final run: the replay completed after %v, every mail after %v", replayed.Round(time.Second), time.Since(final).Round(time.Second))
	p.stop(t)
	f.assertEqualsFold()
	n := f.assertOffsetsNeverWentBack()
	t.Logf("%d offset writes audited, none went back", n)

	msgs := mail.Messages(t, "@"+prefix+".example.test")
	ids := distinct(msgs)
	for id := range ids {
		if !regs[id] {
			t.Fatalf("a mail with Message-ID %q matches no registration's idempotency key", id)
		}
	}
	if len(ids) != len(regs) {
		t.Fatalf("%d of %d registrations got a mail", len(ids), len(regs))
	}
	t.Logf("%d registrations, %d mails: %d sent again after a kill, each with its first Message-ID", len(regs), len(msgs), len(msgs)-len(ids))
}

// registrations returns the Message-IDs the log's registrations of users with the
// prefix must produce.
func (f *procFixture) registrations(prefix string) map[string]bool {
	out := map[string]bool{}
	for _, m := range testenv.ReadAll(f.t, f.topic) {
		e, err := eventlog.FromMessage(m)
		if err == nil && e.Type == domain.TypeUserRegistered && strings.HasPrefix(e.Subject, prefix) {
			out[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = true
		}
	}
	return out
}

func distinct(msgs []testenv.Message) map[string]int {
	out := map[string]int{}
	for _, m := range msgs {
		out[m.MessageID]++
	}
	return out
}

// memberOf returns the member id and generation that last wrote every partition,
// when one member owns them all.
func (f *procFixture) owners() map[int][2]string {
	rows, err := f.pool.Query(context.Background(), `SELECT partition, member, generation::text FROM `+
		pgx.Identifier{f.schema}.Sanitize()+`.offsets WHERE projection = $1`, f.projection.Name())
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	out := map[int][2]string{}
	for rows.Next() {
		var p int
		var m, g string
		if err := rows.Scan(&p, &m, &g); err != nil {
			f.t.Fatal(err)
		}
		out[p] = [2]string{m, g}
	}
	return out
}

func TestPausedMemberCommitsNothingAfterLosingItsPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newProcFixture(t, 4)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 4, Users: 500})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 60000)
	// a applies batch by batch (no folds), so that, woken, it retries its batch and
	// meets the fence. A fold frozen that long is ended by PostgreSQL (its
	// connection idle in transaction) and commits nothing, and a woken fold whose
	// generation ended tries nothing again: its events are the new owner's.
	a := f.start("a", "--fold-rows", "0")
	testenv.WaitFor(t, time.Minute, "a to claim all partitions", func() bool { return len(f.owners()) == 4 && f.progress() > 2000 })
	aOwner := f.owners()[0]
	for p, o := range f.owners() {
		if o != aOwner {
			t.Fatalf("partition %d owned by %v, want a's %v", p, o, aOwner)
		}
	}
	// Freeze a past its session timeout, mid-replay; b arrives and takes everything.
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	b := f.start("b")
	testenv.WaitFor(t, time.Minute, "b to take every partition over", func() bool {
		for _, o := range f.owners() {
			if o[0] == aOwner[0] {
				return false
			}
		}
		return len(f.owners()) == 4
	})
	testenv.WaitFor(t, time.Minute, "b to make progress", func() bool { return f.progress() > 10000 })
	time.Sleep(time.Until(stoppedAt.Add(10 * time.Second)))
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	f.publish(g, 3000)
	testenv.WaitFor(t, 2*time.Minute, "the replay to complete", func() bool { return f.progress() >= 63000 })
	// Woken mid-batch, a's workers try to commit over positions b owns now: the fence
	// must refuse them (else the audit below proves nothing), and a joins again.
	const fencedLine = "fenced: another member owns the partition"
	testenv.WaitFor(t, time.Minute, "the woken member's stale commits to be fenced", func() bool {
		return strings.Contains(readFile(a.log), fencedLine)
	})
	testenv.WaitFor(t, time.Minute, "the woken member to join the group again", func() bool {
		return strings.Count(readFile(a.log), "joined generation") >= 2
	})
	a.stop(t)
	b.stop(t)
	f.assertEqualsFold()
	f.assertOffsetsNeverWentBack()

	// The audit: once b claimed a partition, no write from a's old generation follows.
	var stale int
	err = f.pool.QueryRow(context.Background(), `
		SELECT count(*) FROM `+pgx.Identifier{f.schema}.Sanitize()+`.audit late
		WHERE late.member = $1 AND late.generation = $2::int
		  AND EXISTS (SELECT 1 FROM `+pgx.Identifier{f.schema}.Sanitize()+`.audit claim
		              WHERE claim.partition = late.partition AND claim.id < late.id AND claim.member <> $1)`,
		aOwner[0], aOwner[1]).Scan(&stale)
	if err != nil {
		t.Fatal(err)
	}
	if stale != 0 {
		t.Fatalf("the paused member wrote %d offsets after losing its partitions", stale)
	}
	t.Logf("paused member: fenced on %d partition(s) after waking, then joined again", strings.Count(readFile(a.log), fencedLine))
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// runInProcess runs `projector run` for the fixture's projection in this process, on a
// free loopback port, and returns the HTTP address and a stop that cancels it and
// fails the test unless it returns nil within 30 s.
func (f *procFixture) runInProcess(extra ...string) (addr string, stop func()) {
	f.t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	addr = l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	args := append([]string{"run", "--brokers", strings.Join(testenv.Kafka(f.t), ","), "--topic", f.topic,
		"--database-url", testenv.Get(f.t).DatabaseURL, "--schema", f.schema, "--projection", f.projection.Name(),
		"--listen", addr, "--progress=false", "--log-level", "warn", "--effects", "none",
		"--session-timeout", "6s", "--heartbeat", "500ms"}, extra...)
	go func() { done <- run(ctx, args, io.Discard, io.Discard) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.t.Errorf("run returned %v after cancel", err)
			}
		case <-time.After(30 * time.Second):
			f.t.Error("run did not stop within 30 s of cancel")
		}
	}
	f.t.Cleanup(stop)
	return addr, stop
}
