package projector_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

// mailWorld is one effects test: a unique recipient domain, a ledger namespace, a
// mail server, and the registrations published (the expected mails).
type mailWorld struct {
	f       *fixture
	prefix  string // user id prefix; recipients are …@PREFIX.example.test
	ledger  *sideeffects.Ledger
	mail    testenv.Mailpit
	regs    map[string]events.Event // message id -> the UserRegistered event it announces
	offsets map[string]int64        // event id -> offset
	parts   map[string]int          // event id -> partition
}

func newMailWorld(t *testing.T, f *fixture, rc *redis.Client, mail testenv.Mailpit, lease time.Duration) *mailWorld {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "fx" + hex.EncodeToString(b[:])
	ledger, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: rc, Namespace: prefix, Lease: lease, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &mailWorld{f: f, prefix: prefix, ledger: ledger, mail: mail, regs: map[string]events.Event{},
		offsets: map[string]int64{}, parts: map[string]int{}}
}

// publish generates n events of fresh users (times now, inside any horizon).
func (w *mailWorld) publish(t *testing.T, seed uint64, users, n int) {
	t.Helper()
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: seed, Users: users, Start: time.Now().UTC(), Prefix: w.prefix})
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]events.Event, n)
	for i := range evs {
		evs[i] = g.Next()
	}
	for i := 0; i < n; i += 5000 {
		chunk := evs[i:min(i+5000, n)]
		res := w.f.publish(chunk...)
		for j, e := range chunk {
			w.offsets[e.ID], w.parts[e.ID] = res[j].Offset, res[j].Partition
			if e.Type == domain.TypeUserRegistered {
				w.regs[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = e
			}
		}
	}
}

func (w *mailWorld) effect(t *testing.T) *sideeffects.Effect {
	t.Helper()
	// A send whose answer does not come within the timeout has an unknown outcome and
	// is retried (docs/guarantees.md): these tests are about rebalances, replays and
	// Redis, so the timeout is far above what a loaded shared Mailpit takes.
	e, err := domain.WelcomeEmail(domain.Registry(), domain.Mailer{Addr: w.mail.SMTPAddr, From: "welcome@projector.test", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (w *mailWorld) config(t *testing.T, p *readmodel.Projection) projector.Config {
	cfg := w.f.config(p)
	cfg.Effects, cfg.Ledger = []*sideeffects.Effect{w.effect(t)}, w.ledger
	cfg.EffectMaxAttempts = 1000 // a mail server that is down is waited for, not given up on
	return cfg
}

// mails returns the messages this test's recipients received.
func (w *mailWorld) mails(t *testing.T) []testenv.Message {
	t.Helper()
	return w.mail.Messages(t, "@"+w.prefix+".example.test")
}

// assertOncePerRegistration checks every registration got its mail, with the
// Message-ID its key gives, and returns how many arrived more than once.
func (w *mailWorld) assertOncePerRegistration(t *testing.T) (resent map[string]int) {
	t.Helper()
	seen := map[string]int{}
	for _, m := range w.mails(t) {
		if _, ok := w.regs[m.MessageID]; !ok {
			t.Fatalf("a mail with Message-ID %q matches no registration's idempotency key", m.MessageID)
		}
		seen[m.MessageID]++
	}
	if len(seen) != len(w.regs) {
		t.Fatalf("%d registrations got a mail, want all %d", len(seen), len(w.regs))
	}
	resent = map[string]int{}
	for id, n := range seen {
		if n > 1 {
			resent[id] = n
		}
	}
	return resent
}

// waitEffects waits until the effect's watermark reaches the end of every partition.
func (w *mailWorld) waitEffects(t *testing.T, pool *pgxpool.Pool, schema string, p *readmodel.Projection, timeout time.Duration) {
	t.Helper()
	waitStored(t, timeout, pool, schema, offsets.Key{Projection: p.Name(), Version: p.Version(), Topic: w.f.topic, Effect: domain.WelcomeEmailEffect}, w.f.endOffsets())
}

func TestWelcomeMailOncePerUserAcrossRebalanceReplayRebuildAndASecondService(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 6)
	rc, _ := testenv.Redis(t)
	w := newMailWorld(t, f, rc, testenv.MailpitServer(t), 10*time.Second)
	w.publish(t, 1, 400, 12000)
	t.Logf("%d registrations in %d events", len(w.regs), 12000)

	// First run: instances join and leave while mails go out.
	p := f.domainProjection()
	_, stopA := f.start(w.config(t, p))
	testenv.WaitFor(t, time.Minute, "the first mails", func() bool { return len(w.mails(t)) > 50 })
	_, stopB := f.start(w.config(t, p))
	_, stopC := f.start(w.config(t, p))
	testenv.WaitFor(t, time.Minute, "more mails", func() bool { return len(w.mails(t)) > len(w.regs)/3 })
	stopA()
	f.waitCaughtUp(p, 2*time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, 2*time.Minute)
	if resent := w.assertOncePerRegistration(t); len(resent) != 0 {
		t.Fatalf("first run with rebalances: %d mails sent twice: %v", len(resent), resent)
	}
	stopB()
	stopC()

	// A full replay from zero of the same projection: its read model is dropped, the
	// effect's watermark is not.
	ctx := context.Background()
	fw := pgx.Identifier{f.schema}.Sanitize()
	for _, q := range []string{
		`DROP SCHEMA ` + pgx.Identifier{p.Schema()}.Sanitize() + ` CASCADE`,
		`DELETE FROM ` + fw + `.offsets WHERE projection = '` + p.Name() + `'`,
		`DELETE FROM ` + fw + `.aggregates WHERE projection = '` + p.Name() + `'`,
		`DELETE FROM ` + fw + `.migrations WHERE projection = '` + p.Name() + `'`,
	} {
		if _, err := f.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, stop := f.start(w.config(t, p))
	f.waitCaughtUp(p, 2*time.Minute)
	stop()
	if resent := w.assertOncePerRegistration(t); len(resent) != 0 {
		t.Fatalf("after a replay from zero: %d mails sent twice", len(resent))
	}

	// A rebuild as a new version: a fresh watermark, the same ledger.
	v2, err := domain.NewProjection(p.Name(), 2)
	if err != nil {
		t.Fatal(err)
	}
	_, stop = f.start(w.config(t, v2))
	f.waitCaughtUp(v2, 2*time.Minute)
	w.waitEffects(t, f.pool, f.schema, v2, 2*time.Minute)
	stop()
	if resent := w.assertOncePerRegistration(t); len(resent) != 0 {
		t.Fatalf("after a rebuild as version 2: %d mails sent twice", len(resent))
	}

	// A second service: its own database (schema), another projection, the same
	// effect name and ledger.
	pool2, schema2 := testenv.Postgres(t)
	other := *f
	other.pool, other.schema = pool2, schema2
	w.f = &other
	p2 := other.domainProjection()
	_, stop = other.start(w.config(t, p2))
	other.waitCaughtUp(p2, 2*time.Minute)
	w.waitEffects(t, pool2, schema2, p2, 2*time.Minute)
	stop()
	if resent := w.assertOncePerRegistration(t); len(resent) != 0 {
		t.Fatalf("after a second service replayed the log: %d mails sent twice", len(resent))
	}
}

func TestRedisDataLossResendsNothingBelowTheWatermarkAndOnlyWithTheSameKey(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 4)
	rd := testenv.NewPrivateRedis(t)
	w := newMailWorld(t, f, rd.Client, testenv.MailpitServer(t), 5*time.Second)
	w.publish(t, 2, 600, 6000)
	p := f.domainProjection()
	cfg := w.config(t, p)
	cfg.BatchSize = 20
	cfg.EffectConcurrency = 1           // slow the mails, so that a stop lands mid-batch
	cfg.DrainTimeout = time.Millisecond // a stop abandons the batch in flight, as a crash would

	watermarks := func() map[int]int64 {
		out := map[int]int64{}
		marks, err := offsets.NewStore(f.schema).ListEffect(context.Background(), f.pool, domain.WelcomeEmailEffect, p.Name(), p.Version())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range marks {
			out[m.Partition] = m.Next
		}
		return out
	}
	// Rounds of: run a while, stop abruptly mid-batch (mails of the batch sent, the
	// watermark not advanced), then Redis loses everything — a FLUSHALL, or a kill
	// and a restart without AOF. Events above the watermark run again.
	var lossAt []map[int]int64
	for round := 0; round < 4; round++ {
		_, stop := f.start(cfg)
		target := (round + 1) * len(w.regs) / 5
		testenv.WaitFor(t, time.Minute, "mails to go out", func() bool { return len(w.mails(t)) > target })
		stop()
		lossAt = append(lossAt, watermarks())
		if round%2 == 0 {
			if err := rd.Client.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		} else {
			rd.Kill() // no AOF: it comes back empty
			rd.Start()
		}
	}
	_, stop := f.start(cfg)
	f.waitCaughtUp(p, 2*time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, 2*time.Minute)
	stop()

	resent := w.assertOncePerRegistration(t) // every Message-ID is its event's key
	for id := range resent {
		e := w.regs[id]
		part, off := w.parts[e.ID], w.offsets[e.ID]
		if off < lossAt[0][part] {
			t.Errorf("mail %s (partition %d offset %d) was sent again, though the watermark had passed it (%d) before Redis first lost its data",
				id, part, off, lossAt[0][part])
		}
	}
	if len(resent) == 0 {
		t.Fatalf("no mail was sent twice: the abrupt stops never landed between a send and the watermark, so the test did not test")
	}
	t.Logf("%d registrations; %d mails sent again after abrupt stops and Redis data loss, each with its first Message-ID and above the watermark",
		len(w.regs), len(resent))
}

func TestMailServerDownForAWhileThenOnceEach(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 3)
	rc, _ := testenv.Redis(t)
	mp := testenv.NewPrivateMailpit(t)
	w := newMailWorld(t, f, rc, mp.Mailpit, 10*time.Second)
	mp.Stop()
	w.publish(t, 3, 100, 1500)
	p := f.domainProjection()
	_, stop := f.start(w.config(t, p))
	f.waitCaughtUp(p, time.Minute) // the read model does not wait for the mail server
	time.Sleep(3 * time.Second)    // effects retry against a closed port
	mp.Start()
	w.waitEffects(t, f.pool, f.schema, p, 2*time.Minute)
	stop()
	if resent := w.assertOncePerRegistration(t); len(resent) != 0 {
		t.Fatalf("%d mails sent twice after the mail server came back", len(resent))
	}
}

func TestRefusingMailServerParksTheEffectAndRetrySendsIt(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 2)
	rc, _ := testenv.Redis(t)
	mp := testenv.NewPrivateMailpit(t, "--smtp-allowed-recipients", "^nobody@nowhere\\.invalid$")
	w := newMailWorld(t, f, rc, mp.Mailpit, 10*time.Second)
	w.publish(t, 4, 20, 200)
	p := f.domainProjection()
	_, stop := f.start(w.config(t, p))
	f.waitCaughtUp(p, time.Minute)
	w.waitEffects(t, f.pool, f.schema, p, time.Minute)
	dlq := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version())
	parked, err := dlq.ListEffects(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != len(w.regs) || len(w.mails(t)) != 0 {
		t.Fatalf("%d effects parked and %d mails delivered, want all %d parked", len(parked), len(w.mails(t)), len(w.regs))
	}
	t.Logf("parked with: %s", parked[0].Error)

	// The fix: the mail server accepts again; retry.
	mp.Stop()
	fixed := testenv.NewPrivateMailpit(t)
	_ = fixed
	stop()
	w.mail = fixed.Mailpit
	cfg := w.config(t, p)
	_, stop = f.start(cfg)
	defer stop()
	if n, err := dlq.RequestEffectRetry(context.Background(), ""); err != nil || int(n) != len(w.regs) {
		t.Fatalf("retry marked %d (%v)", n, err)
	}
	testenv.WaitFor(t, time.Minute, "parked effects to resolve", func() bool {
		ps, err := dlq.ListEffects(context.Background(), false)
		return err == nil && len(ps) == 0
	})
	if resent := w.assertOncePerRegistration(t); len(resent) != 0 {
		t.Fatalf("%d mails sent twice on retry", len(resent))
	}
}

// A graceful stop in the middle of an effect batch starts no new run: the runs in
// flight finish and are marked within the drain, the keys reserved for the rest are
// given back, and the next owner runs each of those once — nothing twice. (Before,
// the stopping runner went on through its batch until the drain's deadline cut a
// send in mid-flight, unmarked, for the next owner to run again.)
func TestGracefulStopMidBatchRunsNothingTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newFixture(t, 2)
	rc, _ := testenv.Redis(t)
	w := newMailWorld(t, f, rc, testenv.MailpitServer(t), 30*time.Second)
	w.publish(t, 3, 300, 1200)

	var mu sync.Mutex
	runs := map[string]int{}
	eff, err := sideeffects.Define("slow_count", domain.Registry())
	if err != nil {
		t.Fatal(err)
	}
	sideeffects.On(eff, func(ctx context.Context, run sideeffects.Run, _ events.Event, _ domain.UserRegistered) error {
		mu.Lock()
		runs[run.Key]++
		mu.Unlock()
		select { // a send that takes 150 ms, cut short if its context ends
		case <-time.After(150 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	p := f.domainProjection()
	cfg := w.config(t, p)
	cfg.Effects = []*sideeffects.Effect{eff}
	cfg.EffectConcurrency = 2
	cfg.DrainTimeout = 400 * time.Millisecond // enough for the runs in flight, not for a batch
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(runs)
	}
	_, stop := f.start(cfg)
	testenv.WaitFor(t, time.Minute, "the first runs", func() bool { return total() >= 30 })
	stop()
	stoppedAt := total()
	if stoppedAt >= len(w.regs) {
		t.Fatalf("every run had finished before the stop (%d): the test did not test", stoppedAt)
	}
	_, stop = f.start(cfg)
	testenv.WaitFor(t, 2*time.Minute, "every registration's run", func() bool { return total() >= len(w.regs) })
	waitStored(t, 2*time.Minute, f.pool, f.schema, offsets.Key{Projection: p.Name(), Version: p.Version(), Topic: f.topic, Effect: "slow_count"}, f.endOffsets())
	stop()
	mu.Lock()
	defer mu.Unlock()
	for k, n := range runs {
		if n > 1 {
			t.Errorf("key %s ran %d times across a graceful stop", k, n)
		}
	}
	t.Logf("stopped after %d of %d runs", stoppedAt, len(w.regs))
}
