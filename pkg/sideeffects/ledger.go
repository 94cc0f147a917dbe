package sideeffects

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for LedgerConfig.
const (
	NamespaceDefault = "projector"
	LeaseDefault     = 30 * time.Second
	RetentionDefault = 30 * 24 * time.Hour
)

// LedgerConfig configures a Ledger. Zero values mean the defaults.
type LedgerConfig struct {
	Client    redis.UniversalClient // required
	Namespace string                // key prefix shared by everyone naming the same effects (default NamespaceDefault)
	Lease     time.Duration         // how long a reservation holds before another may take over (default LeaseDefault)
	Retention time.Duration         // how long a done mark is kept (default RetentionDefault)
}

// Ledger is the Redis idempotency ledger. It is safe for concurrent use.
type Ledger struct {
	cfg         LedgerConfig
	marks       markQueue // MarkDone and Release wait here for their flush
	tokenPrefix string    // random, this ledger's: reservation tokens are it and a count
	tokens      atomic.Uint64
	scriptsSent atomic.Bool // the scripts' texts went to Redis: they go by their hashes (runScripts)
}

// NewLedger validates cfg and returns a ledger.
func NewLedger(cfg LedgerConfig) (*Ledger, error) {
	if cfg.Client == nil {
		return nil, errors.New("sideeffects: LedgerConfig.Client is nil")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = NamespaceDefault
	}
	if cfg.Lease == 0 {
		cfg.Lease = LeaseDefault
	}
	if cfg.Retention == 0 {
		cfg.Retention = RetentionDefault
	}
	if cfg.Lease < time.Millisecond || cfg.Retention < cfg.Lease {
		return nil, fmt.Errorf("sideeffects: ledger lease %v must be at least 1ms and retention %v at least the lease", cfg.Lease, cfg.Retention)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return &Ledger{cfg: cfg, tokenPrefix: hex.EncodeToString(b[:]) + "-"}, nil
}

// Lease returns the reservation lease.
func (l *Ledger) Lease() time.Duration { return l.cfg.Lease }

// Retention returns how long done marks are kept.
func (l *Ledger) Retention() time.Duration { return l.cfg.Retention }

// State is what a reservation found.
type State int

const (
	// Acquired means this caller holds the key and must run the effect.
	Acquired State = iota
	// Done means the effect already ran for this key; do not run it.
	Done
	// Held means another holder's lease is live; wait for it to finish or expire.
	Held
)

func (s State) String() string {
	return [...]string{"acquired", "done", "held"}[s]
}

// Reservation is one key's reservation attempt.
type Reservation struct {
	Key   string // the idempotency key (not the Redis key)
	State State
	token string
}

func (l *Ledger) redisKey(key string) string { return l.cfg.Namespace + ":fx:" + key }

const leasePrefix, donePrefix = "lease:", "done:"

// Reserve tries to take every key in one round trip: SET key NX PX lease GET, one
// command a key (Redis 7.0 or later), whose answer — the value it found — tells a
// free key from a done one or one another holds.
func (l *Ledger) Reserve(ctx context.Context, keys []string) ([]Reservation, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	out := make([]Reservation, len(keys))
	sets := make([]*redis.StatusCmd, len(keys))
	pipe := l.cfg.Client.Pipeline()
	for i, k := range keys {
		out[i] = Reservation{Key: k, token: l.newToken()}
		sets[i] = pipe.SetArgs(ctx, l.redisKey(k), leasePrefix+out[i].token, redis.SetArgs{Mode: "NX", TTL: l.cfg.Lease, Get: true})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("sideeffects: ledger reserve: %w", err)
	}
	for i := range out {
		v, err := sets[i].Result()
		switch {
		case errors.Is(err, redis.Nil): // nothing was there: set
			out[i].State = Acquired
		case err != nil:
			return nil, fmt.Errorf("sideeffects: ledger reserve: %w", err)
		case v == leasePrefix+out[i].token: // a retried pipeline found its own SET
			out[i].State = Acquired
		case strings.HasPrefix(v, donePrefix):
			out[i].State = Done
		default:
			out[i].State = Held
		}
	}
	return out, nil
}

// markScript sets the key to done if the caller still holds it, or if nobody does:
// a run that outlived its lease, whose key no other holder took meanwhile, was the
// only run, and leaving its key free would let the next owner — after a crash, say —
// run it again. A key the caller already marked (ARGV[4] is its done prefix: a
// retried mark whose answer was lost) counts as marked. A key another holder took
// or marked is left alone.
const markScript = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == false then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if v and string.sub(v, 1, string.len(ARGV[4])) == ARGV[4] then
  return 1
end
return 0`

// releaseScript deletes the key only if the caller still holds it.
const releaseScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`

// Settle marks done the reservations in done and releases those in release, in one
// round trip, each by compare-and-set on the caller's token. marked[i] is false when
// done[i]'s lease had expired and another holder took the key: the caller must not
// believe it alone ran the effect. A key whose lease expired and that nobody took
// is marked.
func (l *Ledger) Settle(ctx context.Context, done, release []Reservation) (marked []bool, err error) {
	if len(done) == 0 && len(release) == 0 {
		return nil, nil
	}
	now := time.Now().Unix()
	cmds, err := l.runScripts(ctx, func(run scriptRunner) []*redis.Cmd {
		marks := make([]*redis.Cmd, len(done))
		for i, r := range done {
			marks[i] = l.queueMark(run, r, now)
		}
		for _, r := range release {
			l.queueRelease(run, r)
		}
		return marks
	})
	if err != nil {
		return nil, fmt.Errorf("sideeffects: ledger settle: %w", err)
	}
	marked = make([]bool, len(done))
	for i, m := range cmds {
		n, err := m.Int()
		if err != nil {
			return nil, fmt.Errorf("sideeffects: ledger settle: %w", err)
		}
		marked[i] = n == 1
	}
	return marked, nil
}

// A ledger script goes to Redis by its hash (EVALSHA), 40 bytes, once this
// ledger has sent its text (EVAL, which also caches it in Redis): a mark is about
// 0.3 KB less on the wire, and Redis need not hash the text again for each one. A
// pipeline that meets NOSCRIPT (a restarted Redis, a failover, a SCRIPT FLUSH, a
// cluster node that never saw the script) is sent again whole with the text: a
// mark sent twice answers the same (markScript), and a release's answer is not
// used.
var (
	markLua    = script{src: markScript, sha: redis.NewScript(markScript).Hash()}
	releaseLua = script{src: releaseScript, sha: redis.NewScript(releaseScript).Hash()}
)

type script struct{ src, sha string }

// scriptRunner queues a script's run on a pipeline.
type scriptRunner func(s script, keys []string, args ...any) *redis.Cmd

// runScripts sends the scripts queue queues in one pipeline, by their hashes once
// this ledger has sent their texts, and once more with the texts if Redis did not
// know a hash. It returns what queue returned.
func (l *Ledger) runScripts(ctx context.Context, queue func(run scriptRunner) []*redis.Cmd) ([]*redis.Cmd, error) {
	byHash := l.scriptsSent.Load()
	for {
		pipe := l.cfg.Client.Pipeline()
		var all []*redis.Cmd
		run := func(s script, keys []string, args ...any) *redis.Cmd {
			var c *redis.Cmd
			if byHash {
				c = pipe.EvalSha(ctx, s.sha, keys, args...)
			} else {
				c = pipe.Eval(ctx, s.src, keys, args...)
			}
			all = append(all, c)
			return c
		}
		cmds := queue(run)
		_, err := pipe.Exec(ctx)
		if byHash && slices.ContainsFunc(all, func(c *redis.Cmd) bool { return redis.HasErrorPrefix(c.Err(), "NOSCRIPT") }) {
			byHash = false
			continue
		}
		if err == nil && !byHash {
			l.scriptsSent.Store(true)
		}
		return cmds, err
	}
}

func (l *Ledger) queueMark(run scriptRunner, r Reservation, now int64) *redis.Cmd {
	done := donePrefix + r.token + ":"
	return run(markLua, []string{l.redisKey(r.Key)},
		leasePrefix+r.token, fmt.Sprintf("%s%d", done, now), l.cfg.Retention.Milliseconds(), done)
}

func (l *Ledger) queueRelease(run scriptRunner, r Reservation) *redis.Cmd {
	return run(releaseLua, []string{l.redisKey(r.Key)}, leasePrefix+r.token)
}

// newToken returns a token no other reservation has: the ledger's random prefix
// and a count.
func (l *Ledger) newToken() string {
	return l.tokenPrefix + strconv.FormatUint(l.tokens.Add(1), 36)
}
