package sideeffects_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/projector/projector/internal/roundtrips"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/sideeffects"
)

// newLedger returns a ledger on a client of its own, with hooks added to it, and
// the round trips counted on that client: the ledger's, as Redis sees them.
func newLedger(t *testing.T, lease time.Duration, hooks ...redis.Hook) (*sideeffects.Ledger, *roundtrips.Counter) {
	t.Helper()
	c, prefix := testenv.Redis(t)
	rt := roundtrips.On(c)
	for _, h := range hooks {
		c.AddHook(h)
	}
	l, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: c, Namespace: prefix + "ns", Lease: lease, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return l, rt
}

// welcomeKeys returns n keys of the welcome_email effect, for events named name-0,
// name-1, …
func welcomeKeys(name string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = sideeffects.Key("welcome_email", fmt.Sprint(name, "-", i))
	}
	return keys
}

func TestLedgerReserveSettleAndRoundTrips(t *testing.T) {
	t.Parallel()
	l, rt := newLedger(t, time.Minute)
	ctx := context.Background()
	keys := welcomeKeys("event", 100)
	before := rt.Load()
	first, err := l.Reserve(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range first {
		if r.State != sideeffects.Acquired {
			t.Fatalf("fresh key %s: %v", r.Key, r.State)
		}
	}
	second, err := l.Reserve(ctx, keys[:10])
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range second {
		if r.State != sideeffects.Held {
			t.Fatalf("key reserved by another: %v, want held", r.State)
		}
	}
	// The first 90 ran; the last 10 failed permanently and are released.
	marked, err := l.Settle(ctx, first[:90], first[90:])
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range marked {
		if !m {
			t.Fatalf("mark %d refused to its holder", i)
		}
	}
	if n := rt.Load() - before; n != 3 {
		t.Fatalf("%d round trips for reserve(100), reserve(10), settle(100); want 3", n)
	}
	again, err := l.Reserve(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again {
		want := sideeffects.Done
		if i >= 90 {
			want = sideeffects.Acquired // released: free to run again
		}
		if r.State != want {
			t.Fatalf("key %d after settle: %v, want %v", i, r.State, want)
		}
	}
}

// An effect slower than its lease: a second holder takes the key over after the
// lease; the late first holder cannot mark it done. Two attempts, one key.
func TestLedgerSlowHolderCannotMarkAfterItsLease(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t, 300*time.Millisecond)
	ctx := context.Background()
	key := sideeffects.Key("welcome_email", "slow-event")
	var attempts atomic.Int32
	var markedBy sync.Map
	holder := func(name string, startAfter, work time.Duration, wg *sync.WaitGroup) {
		defer wg.Done()
		time.Sleep(startAfter)
		for {
			res, err := l.Reserve(ctx, []string{key})
			if err != nil {
				t.Error(err)
				return
			}
			switch res[0].State {
			case sideeffects.Done:
				return
			case sideeffects.Held:
				time.Sleep(50 * time.Millisecond)
				continue
			}
			attempts.Add(1)
			time.Sleep(work) // the effect, sending with `key`
			marked, err := l.Settle(ctx, res, nil)
			if err != nil {
				t.Error(err)
			}
			markedBy.Store(name, marked[0])
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go holder("slow", 0, 900*time.Millisecond, &wg)
	go holder("second", 100*time.Millisecond, 50*time.Millisecond, &wg)
	wg.Wait()
	slow, _ := markedBy.Load("slow")
	second, _ := markedBy.Load("second")
	if attempts.Load() != 2 || slow != false || second != true {
		t.Fatalf("attempts %d, slow marked %v, second marked %v; want 2 attempts, only the second marks", attempts.Load(), slow, second)
	}
	res, err := l.Reserve(ctx, []string{key})
	if err != nil || res[0].State != sideeffects.Done {
		t.Fatalf("after both: %v %v, want done", res, err)
	}
}

func TestKeyIsStableAndNamed(t *testing.T) {
	t.Parallel()
	a, b := sideeffects.Key("welcome_email", "e1"), sideeffects.Key("welcome_email", "e1")
	if a != b || len(a) != 32 {
		t.Fatalf("keys %q %q", a, b)
	}
	if sideeffects.Key("welcome_email", "e2") == a || sideeffects.Key("other_effect", "e1") == a {
		t.Fatal("different effect or event gave the same key")
	}
}

// Runs finishing one by one are marked done one by one, and the marks of runs
// finishing together share pipelined flushes.
func TestMarkDoneFlushesMarksTogetherAndIsIdempotentForItsHolder(t *testing.T) {
	t.Parallel()
	l, rt := newLedger(t, time.Minute)
	ctx := context.Background()
	keys := welcomeKeys("mark", 200)
	res, err := l.Reserve(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	before := rt.Load()
	var wg sync.WaitGroup
	for i, r := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%10 == 9 { // parks: released
				if err := l.Release(ctx, r); err != nil {
					t.Error(err)
				}
				return
			}
			marked, err := l.MarkDone(ctx, r)
			if err != nil || !marked {
				t.Errorf("mark %d: %v %v", i, marked, err)
			}
		}()
	}
	wg.Wait()
	if n := rt.Load() - before; n >= 200 {
		t.Fatalf("%d round trips for 200 marks and releases made at once: they were not flushed together", n)
	} else {
		t.Logf("200 marks and releases at once: %d round trips", n)
	}
	again, err := l.Reserve(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again {
		want := sideeffects.Done
		if i%10 == 9 {
			want = sideeffects.Acquired
		}
		if r.State != want {
			t.Fatalf("key %d after its mark: %v, want %v", i, r.State, want)
		}
	}
	// A mark retried after its answer was lost is still the holder's.
	if marked, err := l.MarkDone(ctx, res[0]); err != nil || !marked {
		t.Fatalf("a second mark by the holder: %v %v, want marked", marked, err)
	}
	// Another holder's token cannot mark a key a first holder took over.
	if marked, err := l.MarkDone(ctx, again[9]); err != nil || !marked {
		t.Fatalf("mark of a released key by its new holder: %v %v", marked, err)
	}
	if marked, err := l.MarkDone(ctx, res[9]); err != nil || marked {
		t.Fatalf("mark by the holder that released the key: %v %v, want not marked", marked, err)
	}
}

// A run that outlived its lease, with no other holder meanwhile, still marks its key
// done: otherwise the next owner (after a crash, a rebalance) would run it again.
func TestMarkAfterAnExpiredLeaseNobodyTookMarksTheKey(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t, 100*time.Millisecond)
	ctx := context.Background()
	keys := []string{sideeffects.Key("welcome_email", "late-1"), sideeffects.Key("welcome_email", "late-2")}
	res, err := l.Reserve(ctx, keys)
	if err != nil || res[0].State != sideeffects.Acquired || res[1].State != sideeffects.Acquired {
		t.Fatalf("reserve: %v %v", res, err)
	}
	time.Sleep(300 * time.Millisecond) // both leases end; nobody takes the keys
	if marked, err := l.MarkDone(ctx, res[0]); err != nil || !marked {
		t.Fatalf("late mark of a key nobody took: %v %v, want marked", marked, err)
	}
	marked, err := l.Settle(ctx, res[1:], nil)
	if err != nil || !marked[0] {
		t.Fatalf("late settle of a key nobody took: %v %v, want marked", marked, err)
	}
	again, err := l.Reserve(ctx, keys)
	if err != nil || again[0].State != sideeffects.Done || again[1].State != sideeffects.Done {
		t.Fatalf("after the late marks: %v %v, want both done", again, err)
	}
}

// scriptWatch is a redis.Hook that counts the ledger's EVAL and EVALSHA commands
// and, when told to, swaps script hashes in the next pipeline for one Redis does
// not know, so that Redis answers NOSCRIPT as it does after a restart, a failover
// or a SCRIPT FLUSH (which would reach every other test on the server).
type scriptWatch struct {
	evals, evalshas atomic.Int64
	forgetFrom      atomic.Int64 // > 0: the next pipeline's EVALSHAs from this one (1-based) get an unknown hash
}

func (w *scriptWatch) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *scriptWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (w *scriptWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		from := w.forgetFrom.Swap(0)
		var n int64
		for _, c := range cmds {
			switch c.Name() {
			case "eval":
				w.evals.Add(1)
			case "evalsha":
				w.evalshas.Add(1)
				if n++; from > 0 && n >= from {
					c.Args()[1] = strings.Repeat("0", 40)
				}
			}
		}
		return next(ctx, cmds)
	}
}

// The ledger sends a script's text once, then its hash; a pipeline that a Redis
// no longer knowing the hash refuses, even in part, goes again with the text, and
// no mark is lost or refused to its holder.
func TestMarksGoByHashAndSurviveARedisThatForgotTheScripts(t *testing.T) {
	t.Parallel()
	w := &scriptWatch{}
	l, _ := newLedger(t, time.Minute, w)
	ctx := context.Background()
	keys := welcomeKeys("hash", 6)
	res, err := l.Reserve(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	mark := func(i int) {
		t.Helper()
		if marked, err := l.MarkDone(ctx, res[i]); err != nil || !marked {
			t.Fatalf("mark %d: %v %v, want marked", i, marked, err)
		}
	}
	counts := func(step string, evals, evalshas int64) {
		t.Helper()
		if e, s := w.evals.Load(), w.evalshas.Load(); e != evals || s != evalshas {
			t.Fatalf("%s: %d EVAL and %d EVALSHA in all, want %d and %d", step, e, s, evals, evalshas)
		}
	}
	mark(0)
	counts("the first mark, by its text", 1, 0)
	mark(1)
	counts("the second mark, by hash", 1, 1)
	w.forgetFrom.Store(1)
	mark(2)
	counts("a mark Redis answered NOSCRIPT: by hash, then by text", 2, 2)
	// Two marks by hash, the second refused: the first, applied, goes again with the
	// second, and is still its holder's.
	w.forgetFrom.Store(2)
	marked, err := l.Settle(ctx, res[3:5], nil)
	if err != nil || len(marked) != 2 || !marked[0] || !marked[1] {
		t.Fatalf("two marks, one answered NOSCRIPT: %v %v, want both marked", marked, err)
	}
	counts("two marks, one answered NOSCRIPT: both by hash, then both by text", 4, 4)
	w.forgetFrom.Store(1)
	if marked, err := l.Settle(ctx, nil, res[5:]); err != nil || len(marked) != 0 {
		t.Fatalf("a release Redis answered NOSCRIPT: %v %v", marked, err)
	}
	counts("a release Redis answered NOSCRIPT: by hash, then by text", 5, 5)
	again, err := l.Reserve(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again {
		want := sideeffects.Done
		if i == 5 {
			want = sideeffects.Acquired // released after the NOSCRIPT: free again
		}
		if r.State != want {
			t.Fatalf("key %d: %v, want %v", i, r.State, want)
		}
	}
}
