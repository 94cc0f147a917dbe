package domain

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/projector/projector/pkg/events"
)

// Defaults for GeneratorConfig.
const (
	UsersDefault = 1000
	StepDefault  = time.Millisecond
)

// StartDefault is the time of the first generated event unless configured.
var StartDefault = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// GeneratorConfig configures a workload. The same config gives the same events —
// ids, times, data and order — every time.
type GeneratorConfig struct {
	Seed  uint64        // the random seed
	Users int           // user slots (default UsersDefault); a deleted user's slot registers a new user
	Start time.Time     // time of the first event (default StartDefault)
	Step  time.Duration // time between events (default StepDefault)
	// Prefix starts every user id (default "user"): workloads with different
	// prefixes have disjoint aggregates.
	Prefix string
}

// Generator produces the example domain's events deterministically: per-aggregate
// sequence numbers starting at 1, users registered before they act, articles deleted
// only after they were published. Not safe for concurrent use.
type Generator struct {
	cfg   GeneratorConfig
	rng   *rand.Rand
	n     int
	slots []slot
}

type slot struct {
	alive    bool
	gen      int
	userID   string
	seq      uint64
	articles []string
	nextArt  int
}

// NewGenerator returns a generator for cfg.
func NewGenerator(cfg GeneratorConfig) (*Generator, error) {
	if cfg.Users == 0 {
		cfg.Users = UsersDefault
	}
	if cfg.Users < 0 {
		return nil, fmt.Errorf("domain: generator users %d must be positive", cfg.Users)
	}
	if cfg.Start.IsZero() {
		cfg.Start = StartDefault
	}
	if cfg.Step == 0 {
		cfg.Step = StepDefault
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "user"
	}
	return &Generator{
		cfg:   cfg,
		rng:   rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		slots: make([]slot, cfg.Users),
	}, nil
}

// Next returns the next event.
func (g *Generator) Next() events.Event {
	i := g.rng.IntN(len(g.slots))
	s := &g.slots[i]
	var typ string
	var data any
	if !s.alive {
		s.alive, s.seq, s.articles = true, 0, s.articles[:0]
		s.userID = fmt.Sprintf("%s-%06d", g.cfg.Prefix, i)
		if s.gen > 0 {
			s.userID = fmt.Sprintf("%s-%06d-%d", g.cfg.Prefix, i, s.gen)
		}
		typ = TypeUserRegistered
		first, last := pick(g.rng, firstNames), pick(g.rng, lastNames)
		data = UserRegistered{UserID: s.userID, Name: first + " " + last,
			Email: strings.ToLower(first+"."+last) + fmt.Sprintf(".%d.%d@%s.example.test", i, s.gen, g.cfg.Prefix)}
	} else {
		switch r := g.rng.Float64(); {
		case r < 0.15:
			typ, data = TypeUserChangedPassword, UserChangedPassword{UserID: s.userID, PasswordHash: g.hash()}
		case r < 0.70 || (r < 0.98 && len(s.articles) == 0):
			s.nextArt++
			id := fmt.Sprintf("%s-a%d", s.userID, s.nextArt)
			s.articles = append(s.articles, id)
			typ, data = TypeUserPublishedAnArticle, UserPublishedAnArticle{UserID: s.userID, ArticleID: id,
				Title: g.sentence(4, 9), Body: g.paragraph(250, 450)}
		case r < 0.98:
			k := g.rng.IntN(len(s.articles))
			id := s.articles[k]
			s.articles = append(s.articles[:k], s.articles[k+1:]...)
			typ, data = TypeArticleDeleted, ArticleDeleted{UserID: s.userID, ArticleID: id}
		default:
			typ, data = TypeUserDeleted, UserDeleted{UserID: s.userID, Reason: pick(g.rng, reasons)}
			s.alive = false
			s.gen++
		}
	}
	s.seq++
	raw, err := json.Marshal(data)
	if err != nil {
		panic(err) // the types above always marshal
	}
	e := events.Event{
		ID: g.uuid(), Source: Source, Type: typ, Subject: s.userID,
		Time:            g.cfg.Start.Add(time.Duration(g.n) * g.cfg.Step),
		DataContentType: events.ContentTypeJSON, Data: raw, Sequence: s.seq, SchemaVersion: 1,
	}
	g.n++
	return e
}

// uuid returns a version-4-shaped UUID drawn from the seeded source.
func (g *Generator) uuid() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := g.rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (g *Generator) hash() string {
	var b [32]byte
	for i := 0; i < 32; i += 8 {
		v := g.rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return "$argon2id$" + hex.EncodeToString(b[:])
}

func (g *Generator) sentence(minWords, maxWords int) string {
	n := minWords + g.rng.IntN(maxWords-minWords+1)
	var sb strings.Builder
	for i := range n {
		w := pick(g.rng, words)
		if i == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		} else {
			sb.WriteByte(' ')
		}
		sb.WriteString(w)
	}
	return sb.String()
}

func (g *Generator) paragraph(minBytes, maxBytes int) string {
	target := minBytes + g.rng.IntN(maxBytes-minBytes+1)
	var sb strings.Builder
	for sb.Len() < target {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(g.sentence(6, 14))
		sb.WriteByte('.')
	}
	return sb.String()
}

func pick(r *rand.Rand, list []string) string { return list[r.IntN(len(list))] }

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Margaret", "Ken", "Radia", "Leslie", "Sophie", "Tony", "Hedy", "Niklaus", "Katherine"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Knuth", "Hamilton", "Thompson", "Perlman", "Lamport", "Wilson", "Hoare", "Lamarr", "Wirth", "Johnson"}
	reasons    = []string{"closed by user", "inactive", "duplicate account", "requested erasure"}
	words      = strings.Fields(`event log replay offset partition projection snapshot consumer
		producer broker ledger idempotent email welcome article user stream order history
		immutable aggregate sequence batch commit transaction schema version rebuild deploy
		service query table index read model write fold state live catch up lag latency
		throughput recovery crash restart fence generation group member rebalance durable`)
)
