package chaos

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/projector/projector/internal/domain"
)

// effectBatch is the projector's default --effect-batch: a crash re-runs at most
// this many effects per partition, with the same keys.
const effectBatch = 16

// recoveryBound bounds the time from a healed fault to lag zero.
const recoveryBound = 2 * time.Minute

// All returns every scenario, in order.
func All() []Scenario {
	all := []Scenario{
		{N: 1, Name: "SIGKILL mid-batch during replay", Bound: bound(5, 12), Run: sigkillLoop},
		{N: 2, Name: "zombie: SIGSTOP past the session timeout", Bound: bound(4, 5), Run: zombie},
		{N: 3, Name: "rebalance churn: join, leave, kill", Bound: bound(5, 10), Run: churn},
		{N: 4, Name: "Kafka broker SIGKILLed and restarted; down > rebalance timeout", Fresh: FreshKafka, Bound: bound(5, 10), Run: brokerRestarts},
		{N: 5, Name: "PostgreSQL crash, read-only, full disk", Fresh: FreshPGTmpfs, Bound: bound(5, 10), Run: postgresFaults},
		{N: 8, Name: "duplicates (retried writes), sequence gaps and swaps", Bound: bound(3, 5), Run: duplicatesGapsSwaps},
		{N: 9, Name: "poison and malformed input", Bound: bound(3, 5), Run: poisonInput},
		{N: 6, Name: "Redis FLUSHALL mid-dispatch; killed, restarted empty", Fresh: FreshRedis, Bound: bound(4, 8), Run: redisLoss},
		{N: 7, Name: "an effect slower than its lease", Bound: bound(3, 4), Run: slowEffect},
		{N: 10, Name: "network cut (netns, veth down)", Fresh: FreshVeth, Bound: bound(4, 8), Run: networkCut},
		{N: 11, Name: "HTTP ingest: auth, limits, 1,000 clients", Bound: bound(3, 5), Run: httpIngest},
	}
	sort.Slice(all, func(i, j int) bool { return all[i].N < all[j].N })
	return all
}

func bound(shortMin, fullMin int) func(Profile) time.Duration {
	return func(p Profile) time.Duration {
		if p.Full {
			return time.Duration(fullMin) * time.Minute
		}
		return time.Duration(shortMin) * time.Minute
	}
}

// Live publishes n generated events every interval until stopped; stop waits for
// the publisher goroutine.
func (t *T) Live(ctx context.Context, g *domain.Generator, n int, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			_ = t.PublishGenerated(pctx, g, n)
			pcancel()
			_ = Sleep(ctx, interval)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// settle waits for lag zero (recording the recovery time) and for every welcome
// mail, then stops the instances with SIGTERM, noting any unclean exit.
func (t *T) settle(ctx context.Context, procs ...*Proc) error {
	d, err := t.WaitCaughtUp(ctx, recoveryBound)
	t.R.Recovered(d)
	if err != nil {
		return err
	}
	if err := t.WaitMails(ctx, time.Minute); err != nil {
		return err
	}
	for _, p := range procs {
		if p.Alive() {
			if err := p.Term(30 * time.Second); err != nil {
				t.R.Note("%s exited uncleanly after SIGTERM: %v; log %s", p.Name, err, p.Log)
				return fmt.Errorf("%s: %w", p.Name, err)
			}
		}
	}
	return nil
}

func (t *T) lag(ctx context.Context) int64 { return t.LogEnd(ctx) - t.Progress(ctx) }

// 1. SIGKILL the projector at random points during the replay, with live traffic
// between crashes so that every kill lands mid-replay.
func sigkillLoop(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	midReplay := 0
	for t.R.Kills < t.P.Kills {
		// Keep the replay long enough that the kill lands inside it.
		if t.lag(ctx) < 16000 {
			if err := t.PublishGenerated(ctx, g, 16000); err != nil {
				return Expect{}, err
			}
		}
		before := t.Progress(ctx)
		// Folds of two or three reads (a partition's hundred users, their marks and
		// a read's new rows fill 250 rows within a few hundred events): a replay
		// folded whole commits only at its end, and the kill would land after it.
		p, err := t.StartProjector(ctx, "--batch-size", "100", "--fold-rows", "250")
		if err != nil {
			return Expect{}, err
		}
		if err := WaitFor(ctx, time.Minute, "progress after restart", func() bool { return t.Progress(ctx) > before || !p.Alive() }); err != nil {
			return Expect{}, err
		}
		if !p.Alive() {
			return Expect{}, fmt.Errorf("projector exited on its own: %w\n%s", p.Err(), Tail(p.Log, 20))
		}
		_ = Sleep(ctx, time.Duration(t.Rng.IntN(300))*time.Millisecond)
		if t.lag(ctx) > 0 {
			midReplay++
		}
		p.Kill()
		t.R.Kills++
	}
	t.R.Note("%d SIGKILLs, %d with lag > 0 at the kill (mid-replay); progress %d of %d at the last", t.R.Kills, midReplay, t.Progress(ctx), t.LogEnd(ctx))
	if midReplay < t.R.Kills/2 {
		return Expect{}, fmt.Errorf("only %d of %d kills landed mid-replay: the scenario did not test", midReplay, t.R.Kills)
	}
	p, err := t.StartProjector(ctx)
	if err != nil {
		return Expect{}, err
	}
	return Expect{Effects: true, MaxRedelivered: t.R.Kills * t.Partitions * effectBatch}, t.settle(ctx, p)
}

// 2. A zombie: one of two instances frozen past its session timeout while the
// other takes its partitions over, then woken.
func zombie(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	// The lease outlasts the freeze: with the ledger intact, every mail goes once.
	a, err := t.StartProjector(ctx, "--effect-lease", "40s", "--batch-size", "50")
	if err != nil {
		return Expect{}, err
	}
	if err := WaitFor(ctx, time.Minute, "a to own every partition", func() bool {
		o := t.Owners(ctx)
		return len(o) == t.Partitions && t.Progress(ctx) > 500
	}); err != nil {
		return Expect{}, err
	}
	aMember := t.Owners(ctx)[0]
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		return Expect{}, err
	}
	stopped := time.Now()
	b, err := t.StartProjector(ctx, "--effect-lease", "40s", "--batch-size", "50")
	if err != nil {
		return Expect{}, err
	}
	if err := WaitFor(ctx, time.Minute, "b to take every partition over", func() bool {
		o := t.Owners(ctx)
		for _, m := range o {
			if m == aMember {
				return false
			}
		}
		return len(o) == t.Partitions
	}); err != nil {
		return Expect{}, err
	}
	takeover := time.Since(stopped)
	if err := t.PublishGenerated(ctx, g, 2000); err != nil {
		return Expect{}, err
	}
	_ = Sleep(ctx, time.Until(stopped.Add(12*time.Second)))
	frozen := time.Since(stopped)
	if err := a.Signal(syscall.SIGCONT); err != nil {
		return Expect{}, err
	}
	t.R.Note("a frozen %v (session timeout 6s); b owned every partition after %v; progress at wake %d of %d", frozen.Round(100*time.Millisecond), takeover.Round(100*time.Millisecond), t.Progress(ctx), t.LogEnd(ctx))
	if err := t.PublishGenerated(ctx, g, 1000); err != nil {
		return Expect{}, err
	}
	_ = Sleep(ctx, 3*time.Second) // a's woken workers try their stale commits
	err = t.settle(ctx, a, b)
	t.R.Note("after waking: %d fenced refusals in the logs (stale batches rolled back)", countLog(t.Dir, "fenced"))
	return Expect{Effects: true}, err
}

// 3. Rebalance churn: up to three instances joining, leaving cleanly and being
// killed, with live traffic throughout.
func churn(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	stop := t.Live(ctx, t.Generator(t.Rng.Uint64(), 200, "l"), 300, 500*time.Millisecond)
	defer stop()
	var alive []*Proc
	steps, joins, leaves := 8, 0, 0
	if t.P.Full {
		steps = 24
	}
	for i := range steps {
		action := t.Rng.IntN(3)
		switch {
		case len(alive) == 0 || (len(alive) < 3 && action == 0):
			p, err := t.StartProjector(ctx)
			if err != nil {
				return Expect{}, err
			}
			alive = append(alive, p)
			joins++
		case action == 1 || len(alive) == 3 && action == 0:
			k := t.Rng.IntN(len(alive))
			if err := alive[k].Term(30 * time.Second); err != nil {
				return Expect{}, fmt.Errorf("clean leave of %s: %w\n%s", alive[k].Name, err, Tail(alive[k].Log, 20))
			}
			alive = append(alive[:k], alive[k+1:]...)
			leaves++
		default:
			k := t.Rng.IntN(len(alive))
			alive[k].Kill()
			alive = append(alive[:k], alive[k+1:]...)
			t.R.Kills++
		}
		_ = Sleep(ctx, time.Duration(1500+t.Rng.IntN(2500))*time.Millisecond)
		_ = i
	}
	if len(alive) == 0 {
		p, err := t.StartProjector(ctx)
		if err != nil {
			return Expect{}, err
		}
		alive = append(alive, p)
		joins++
	}
	stop()
	t.R.Note("%d steps: %d joins, %d clean leaves, %d kills; %d instances at the end", steps, joins, leaves, t.R.Kills, len(alive))
	return Expect{Effects: true, MaxRedelivered: t.R.Kills * t.Partitions * effectBatch}, t.settle(ctx, alive...)
}

// catchUp waits until the stored offsets reach the log's end as it is now (live
// traffic may go on), records the time as a recovery and returns it.
func (t *T) catchUp(ctx context.Context, what string) error {
	start := time.Now()
	var target int64 = -1
	if err := WaitFor(ctx, recoveryBound, what+": the log's end", func() bool { target = t.LogEnd(ctx); return target >= 0 }); err != nil {
		return err
	}
	err := WaitFor(ctx, recoveryBound, what+": lag back to zero", func() bool { return t.Progress(ctx) >= target })
	d := time.Since(start)
	t.R.Recovered(d)
	t.R.Note("%s: caught up to offset sum %d in %v", what, target, d.Round(100*time.Millisecond))
	return err
}

func (t *T) waitProgress(ctx context.Context, frac float64, total int) error {
	return WaitFor(ctx, 2*time.Minute, fmt.Sprintf("progress %.0f%%", frac*100), func() bool {
		return float64(t.Progress(ctx)) >= frac*float64(total)
	})
}

// alive fails when a projector process has exited on its own.
func alive(procs ...*Proc) error {
	for _, p := range procs {
		if !p.Alive() {
			return fmt.Errorf("%s exited on its own (%w); log %s:\n%s", p.Name, p.Err(), p.Log, Tail(p.Log, 15))
		}
	}
	return nil
}

// 4. The broker killed and restarted on the same log folder at ≥ 20% progress,
// then down longer than the rebalance timeout, with a producer writing throughout.
func brokerRestarts(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	p, err := t.StartProjector(ctx)
	if err != nil {
		return Expect{}, err
	}
	stop := t.Live(ctx, t.Generator(t.Rng.Uint64(), 200, "l"), 100, 300*time.Millisecond)
	defer stop()
	restarts := 1
	if t.P.Full {
		restarts = 3
	}
	for i := range restarts {
		if err := t.waitProgress(ctx, 0.2+0.2*float64(i), t.P.Events); err != nil {
			return Expect{}, err
		}
		at := t.Progress(ctx)
		t.S.Kafka.Kill()
		t.R.Kills++
		down := time.Duration(2000+t.Rng.IntN(6000)) * time.Millisecond
		_ = Sleep(ctx, down)
		if err := t.S.Kafka.Start(ctx); err != nil {
			return Expect{}, err
		}
		if err := alive(p); err != nil {
			return Expect{}, err
		}
		if err := t.catchUp(ctx, fmt.Sprintf("broker SIGKILL %d at %d of %d events, down %v", i+1, at, t.P.Events, down.Round(100*time.Millisecond))); err != nil {
			return Expect{}, err
		}
	}
	// Down longer than the rebalance timeout (30 s).
	t.S.Kafka.Kill()
	t.R.Kills++
	_ = Sleep(ctx, 35*time.Second)
	if err := t.S.Kafka.Start(ctx); err != nil {
		return Expect{}, err
	}
	if err := alive(p); err != nil {
		return Expect{}, err
	}
	if err := t.catchUp(ctx, "broker down 35 s (> rebalance timeout 30 s)"); err != nil {
		return Expect{}, err
	}
	stop()
	return Expect{Effects: true}, t.settle(ctx, p)
}

// 5. PostgreSQL crashed mid-transaction (pg_ctl stop -m immediate), set read-only,
// and out of disk (its data on a small tmpfs).
func postgresFaults(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 400, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	p, err := t.StartProjector(ctx)
	if err != nil {
		return Expect{}, err
	}
	for _, fault := range []func(context.Context, *T, *Proc, *domain.Generator) error{pgCrash, pgReadOnly, pgDiskFull} {
		if err := fault(ctx, t, p, g); err != nil {
			return Expect{}, err
		}
	}
	return Expect{Effects: true}, t.settle(ctx, p)
}

// pgCrash stops PostgreSQL with -m immediate mid-transaction, for 3 s.
func pgCrash(ctx context.Context, t *T, p *Proc, _ *domain.Generator) error {
	pg := t.S.PG
	if err := t.waitProgress(ctx, 0.25, t.P.Events); err != nil {
		return err
	}
	at := t.Progress(ctx)
	if err := pg.Stop(ctx, "immediate"); err != nil {
		return err
	}
	t.R.Kills++
	_ = Sleep(ctx, 3*time.Second)
	if err := pg.Start(ctx); err != nil {
		return err
	}
	if err := alive(p); err != nil {
		return err
	}
	if err := t.catchUp(ctx, fmt.Sprintf("pg_ctl stop -m immediate at %d, down 3s", at)); err != nil {
		return err
	}
	return nil
}

// pgReadOnly turns PostgreSQL read-only while events arrive: nothing may move.
func pgReadOnly(ctx context.Context, t *T, p *Proc, g *domain.Generator) error {
	pg := t.S.PG
	hold := 15 * time.Second
	if t.P.Full {
		hold = time.Minute
	}
	if err := pg.Exec(ctx, `ALTER SYSTEM SET default_transaction_read_only = on`, `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	_ = Sleep(ctx, time.Second)
	before := t.Progress(ctx)
	if err := t.PublishGenerated(ctx, g, 2000); err != nil {
		return err
	}
	_ = Sleep(ctx, hold)
	during := t.Progress(ctx) - before
	if err := pg.Exec(ctx, `SET default_transaction_read_only = off`, `ALTER SYSTEM RESET default_transaction_read_only`, `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	if err := alive(p); err != nil {
		return err
	}
	t.R.Note("read-only for %v: the stored offsets moved by %d meanwhile (want 0)", hold, during)
	if during != 0 {
		return fmt.Errorf("offsets moved by %d while PostgreSQL was read-only", during)
	}
	if err := t.catchUp(ctx, fmt.Sprintf("read-only for %v", hold)); err != nil {
		return err
	}
	return nil
}

// pgDiskFull fills PostgreSQL's disk for 15 s while events arrive.
func pgDiskFull(ctx context.Context, t *T, p *Proc, g *domain.Generator) error {
	pg := t.S.PG
	filler := pg.dir + "/filler"
	n, err := fillDisk(filler)
	if err != nil {
		return err
	}
	before := t.Progress(ctx)
	if err := t.PublishGenerated(ctx, g, 3000); err != nil {
		return err
	}
	_ = Sleep(ctx, 15*time.Second)
	during := t.Progress(ctx) - before
	pgAlive := PortOpen(ctx, pg.Host, pg.Port)
	if err := removeFile(filler); err != nil {
		return err
	}
	t.R.Note("disk full (%d MiB filler on the tmpfs) for 15 s: offsets moved by %d of 3000; PostgreSQL %s", n>>20, during,
		map[bool]string{true: "kept running", false: "went down (restarted by the suite)"}[pgAlive])
	if !pgAlive {
		_ = pg.Stop(ctx, "immediate")
		if err := pg.Start(ctx); err != nil {
			return err
		}
	}
	if err := alive(p); err != nil {
		return err
	}
	if err := t.catchUp(ctx, "disk full for 15 s"); err != nil {
		return err
	}
	return nil
}

// 6. Redis FLUSHALL while effects are dispatched, then Redis killed (no AOF) and
// restarted empty: the watermark bounds what runs again, always with the same key.
func redisLoss(ctx context.Context, t *T) (Expect, error) {
	g := t.Generator(t.Rng.Uint64(), 3000, "")
	if err := t.PublishGenerated(ctx, g, t.P.Events); err != nil {
		return Expect{}, err
	}
	p, err := t.StartProjector(ctx, "--effect-concurrency", "2")
	if err != nil {
		return Expect{}, err
	}
	mails := func() int {
		ids, _ := t.S.Mailpit.MessageIDs(ctx, t.Name)
		return len(ids)
	}
	if err := WaitFor(ctx, 2*time.Minute, "the first mails", func() bool { return mails() >= 200 }); err != nil {
		return Expect{}, err
	}
	rc := t.S.Redis.Client()
	defer func() { _ = rc.Close() }()
	at := mails()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		return Expect{}, err
	}
	t.R.Note("FLUSHALL after %d mails", at)
	if err := WaitFor(ctx, 2*time.Minute, "more mails", func() bool { return mails() >= at+300 }); err != nil {
		return Expect{}, err
	}
	at = mails()
	t.S.Redis.Kill()
	t.R.Kills++
	_ = Sleep(ctx, 3*time.Second)
	if err := t.S.Redis.Start(ctx); err != nil {
		return Expect{}, err
	}
	t.R.Note("redis SIGKILLed after %d mails, restarted empty 3 s later", at)
	if err := alive(p); err != nil {
		return Expect{}, err
	}
	return Expect{Effects: true, MaxRedelivered: 2 * t.Partitions * effectBatch}, t.settle(ctx, p)
}
