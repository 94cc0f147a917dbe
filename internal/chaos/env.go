package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// Servers is one set of private servers.
type Servers struct {
	Kafka   *Kafka
	PG      *Postgres
	Redis   *Redis
	Mailpit *Mailpit
}

// Env is one scenario's world: its servers (shared base ones, or its own private
// ones for the servers it faults), its topic, projection, framework schema, ledger
// namespace and mail domain, its processes, and its history.
type Env struct {
	S          Servers
	Sup        *Supervisor
	Dir        string
	Bins       Binaries
	Topic      string
	Partitions int
	Name       string // projection name, ledger namespace, generator prefix
	Schema     string // framework schema
	Projection *readmodel.Projection
	Pool       *pgxpool.Pool
	Hist       *History
	Reg        *events.Registry
	Log        func(format string, a ...any)
	Veth       *Veth // set when the projector runs in a network namespace
	// MasterKey is the personal-data master key every process of the run uses;
	// Keys is the key store in this env's PostgreSQL. Events are published sealed,
	// as the producer publishes them, and the oracle reads them decrypted.
	MasterKey string
	KeyDB     *Postgres // where the key store lives (see keyDB)
	Keys      *shred.PGKeys
	keyPool   *pgxpool.Pool

	pubMu sync.Mutex
	pub   *eventlog.Publisher
	nproc int
}

// Binaries are the programs under test.
type Binaries struct{ Projector, Producer string }

// Setup creates the topic, the projection's tables and the offsets audit.
func (e *Env) Setup(ctx context.Context) error {
	if _, err := eventlog.EnsureTopic(ctx, e.S.Kafka.Brokers(), eventlog.TopicConfig{Name: e.Topic, Partitions: e.Partitions}); err != nil {
		return fmt.Errorf("topic: %w", err)
	}
	p, err := domain.NewProjection(e.Name, 1)
	if err != nil {
		return err
	}
	e.Projection = p
	e.Reg = domain.Registry()
	cfg, err := pgxpool.ParseConfig(e.S.PG.URL())
	if err != nil {
		return err
	}
	cfg.MaxConns = 4
	if e.Pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return err
	}
	master, err := shred.ParseMasterKey(e.MasterKey)
	if err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	kcfg, err := pgxpool.ParseConfig(e.KeyDB.URL())
	if err != nil {
		return err
	}
	kcfg.MaxConns = 4
	if e.keyPool, err = pgxpool.NewWithConfig(ctx, kcfg); err != nil {
		return err
	}
	if e.Keys, err = shred.OpenPG(ctx, e.keyPool, master, shred.PGOptions{}); err != nil {
		return err
	}
	r, err := projector.New(projector.Config{Brokers: e.S.Kafka.Brokers(), Topic: e.Topic, Projection: p, Pool: e.Pool, Schema: e.Schema})
	if err != nil {
		return err
	}
	if err := r.Setup(ctx); err != nil {
		return err
	}
	fw := pgx.Identifier{e.Schema}.Sanitize()
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + fw + `.chaos_audit (id bigserial PRIMARY KEY, projection text, partition int, member text, generation int,
			old_next bigint, new_next bigint, at timestamptz DEFAULT clock_timestamp())`,
		`CREATE OR REPLACE FUNCTION ` + fw + `.chaos_audit_offsets() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN
		   INSERT INTO ` + fw + `.chaos_audit (projection, partition, member, generation, old_next, new_next)
		   VALUES (NEW.projection, NEW.partition, NEW.member, NEW.generation, CASE WHEN TG_OP = 'UPDATE' THEN OLD.next_offset END, NEW.next_offset);
		   RETURN NEW;
		 END $$`,
	} {
		if _, err := e.Pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("audit trigger: %w", err)
		}
	}
	if err := store.TriggerOnOffsets(ctx, e.Pool, e.Schema, "chaos_audit", fw+`.chaos_audit_offsets()`); err != nil {
		return fmt.Errorf("audit trigger: %w", err)
	}
	return nil
}

// Close releases the pool and publisher (processes and servers belong to the
// supervisor).
func (e *Env) Close() {
	if e.pub != nil {
		_ = e.pub.Close()
	}
	if e.Pool != nil {
		e.Pool.Close()
	}
	if e.keyPool != nil {
		e.keyPool.Close()
	}
}

// Generator returns a deterministic workload whose aggregates (and mail domain)
// start with the scenario's name and suffix: workloads with different suffixes
// never share an aggregate.
func (e *Env) Generator(seed uint64, users int, suffix string) *domain.Generator {
	g, _ := domain.NewGenerator(domain.GeneratorConfig{Seed: seed, Users: users, Start: time.Now().UTC(), Prefix: e.Name + suffix})
	return g
}

func (e *Env) publisher() (*eventlog.Publisher, error) {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	if e.pub == nil {
		p, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: e.S.Kafka.Brokers(), Topic: e.Topic, MaxAttempts: 3, WriteTimeout: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		e.pub = p
	}
	return e.pub, nil
}

// Publish sends events, recording each attempt in the history. It returns how many
// were acknowledged.
func (e *Env) Publish(ctx context.Context, evs ...events.Event) (int, error) {
	pub, err := e.publisher()
	if err != nil {
		return 0, err
	}
	// Personal fields are sealed as the producer seals them (a copy: the caller's
	// events stay plain). Sealing failing is a failed attempt: nothing was sent.
	sealed := append([]events.Event(nil), evs...)
	var res []eventlog.Result
	perr := shred.Seal(ctx, e.Keys, e.Reg, sealed)
	if perr == nil {
		res, perr = pub.Publish(ctx, sealed...)
	}
	now := time.Now()
	acked := 0
	atts := make([]Attempt, len(evs))
	for i, ev := range evs {
		a := Attempt{EventID: ev.ID, Subject: ev.Subject, At: now, Offset: -1}
		switch {
		case i < len(res) && res[i].Err == nil:
			a.Outcome, a.Partition, a.Offset = OK, res[i].Partition, res[i].Offset
			acked++
		case i < len(res):
			a.Outcome, a.Err = Unknown, res[i].Err.Error()
		default:
			a.Outcome = Unknown
			if perr != nil {
				a.Err = perr.Error()
			}
		}
		atts[i] = a
	}
	e.Hist.Record(atts...)
	return acked, perr
}

// PublishGenerated publishes n generated events in batches of up to 2,000.
func (e *Env) PublishGenerated(ctx context.Context, g *domain.Generator, n int) error {
	for n > 0 {
		k := min(n, 2000)
		evs := make([]events.Event, k)
		for i := range evs {
			evs[i] = g.Next()
		}
		if _, err := e.Publish(ctx, evs...); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// ProjectorArgs are the arguments of `projector run` for this env.
func (e *Env) ProjectorArgs(extra ...string) []string {
	return append([]string{"run", "--brokers", strings.Join(e.S.Kafka.Brokers(), ","), "--topic", e.Topic,
		"--database-url", e.S.PG.URL(), "--schema", e.Schema, "--projection", e.Name, "--group", "g-" + e.Name,
		"--listen", "127.0.0.1:0", "--progress=false", "--session-timeout", "6s", "--heartbeat", "500ms",
		"--batch-size", "200", "--redis-url", e.S.Redis.URL(), "--ledger-namespace", e.Name,
		"--smtp-addr", e.S.Mailpit.SMTPAddr(), "--effect-lease", "10s", "--master-key", e.MasterKey,
		"--key-database-url", e.KeyDB.URL()}, extra...)
}

// StartProjector starts an instance of `projector run` as a process.
func (e *Env) StartProjector(ctx context.Context, extra ...string) (*Proc, error) {
	e.nproc++
	// Not tied to a context: the suite ends it by pid, when the scenario says so.
	cmd := exec.CommandContext(context.WithoutCancel(ctx), e.Bins.Projector, e.ProjectorArgs(extra...)...)
	if e.Veth != nil {
		cmd = e.Veth.Command(context.WithoutCancel(ctx), e.Bins.Projector, e.ProjectorArgs(extra...)...)
	}
	return e.Sup.Start(fmt.Sprintf("projector-%d", e.nproc), cmd)
}

// Progress is the sum of the stored next offsets (-1 when PostgreSQL does not answer).
func (e *Env) Progress(ctx context.Context) int64 {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	sum, err := store.SumNextOffsetsAnyVersion(ctx, e.Pool, e.Schema, e.Name)
	if err != nil {
		return -1
	}
	return sum
}

// LogEnd is the sum of the partitions' end offsets (-1 when Kafka does not answer).
func (e *Env) LogEnd(ctx context.Context) int64 {
	ends, err := e.ends(ctx)
	if err != nil {
		return -1
	}
	var s int64
	for _, v := range ends {
		s += v
	}
	return s
}

func (e *Env) ends(ctx context.Context) (map[int]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// A client per call, closed: the broker under test is killed and restarted, and
	// each poll starts from a fresh connection.
	kc := eventlog.NewClient(e.S.Kafka.Brokers())
	defer kc.Close()
	c := kc.Kafka()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range e.Partitions {
		req.Topics[e.Topic] = append(req.Topics[e.Topic], kafka.LastOffsetOf(p))
	}
	res, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, po := range res.Topics[e.Topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		out[po.Partition] = po.LastOffset
	}
	if len(out) != e.Partitions {
		return nil, fmt.Errorf("end offsets of %d of %d partitions", len(out), e.Partitions)
	}
	return out, nil
}

// WaitCaughtUp waits until the stored offsets reach the log's end, and returns
// how long that took.
func (e *Env) WaitCaughtUp(ctx context.Context, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	err := WaitFor(ctx, bound, "lag zero", func() bool {
		end := e.LogEnd(ctx)
		return end >= 0 && e.Progress(ctx) == end
	})
	if err != nil {
		err = fmt.Errorf("%w (stored %d of %d)", err, e.Progress(ctx), e.LogEnd(ctx))
	}
	return time.Since(start), err
}

// ReadLog reads every partition from offset zero to its end.
func (e *Env) ReadLog(ctx context.Context) ([]Record, error) {
	ends, err := e.ends(ctx)
	if err != nil {
		return nil, err
	}
	var out []Record
	for p := range e.Partitions {
		if ends[p] == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.S.Kafka.Brokers(), Topic: e.Topic, Partition: p, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
		for {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			m, err := r.ReadMessage(rctx)
			cancel()
			if err != nil {
				_ = r.Close()
				return nil, fmt.Errorf("read %d: %w", p, err)
			}
			ev, derr := eventlog.FromMessage(m)
			if derr == nil && ev.Encrypted() {
				derr = shred.Open(ctx, e.Keys, nil, &ev) // the oracle folds what handlers see
			}
			out = append(out, Record{Partition: p, Offset: m.Offset, Event: ev, DecodeErr: derr})
			if m.Offset >= ends[p]-1 {
				break
			}
		}
		_ = r.Close()
	}
	return out, nil
}

// Observe gathers what the oracle checks.
func (e *Env) Observe(ctx context.Context) (Observed, error) {
	var obs Observed
	var err error
	if obs.Log, err = e.ReadLog(ctx); err != nil {
		return obs, err
	}
	fw := pgx.Identifier{e.Schema}.Sanitize()
	if obs.Stored, err = store.NextOffsetsAnyVersion(ctx, e.Pool, e.Schema, e.Name, e.Topic); err != nil {
		return obs, err
	}
	parked, err := store.ListOpenParked(ctx, e.Pool, e.Schema, e.Name)
	if err != nil {
		return obs, err
	}
	obs.Parked = make([]ParkedRow, len(parked))
	for i, p := range parked {
		obs.Parked[i] = ParkedRow(p)
	}
	rows, err := e.Pool.Query(ctx, `SELECT id, partition, member, generation, old_next, new_next FROM `+fw+`.chaos_audit WHERE projection = $1`, e.Name)
	if err != nil {
		return obs, err
	}
	obs.Audit, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditRow, error) {
		var a AuditRow
		return a, r.Scan(&a.ID, &a.Partition, &a.Member, &a.Generation, &a.OldNext, &a.NewNext)
	})
	if err != nil {
		return obs, err
	}
	fx, err := store.ListOpenParkedEffects(ctx, e.Pool, e.Schema, e.Name)
	if err != nil {
		return obs, err
	}
	obs.ParkedEffects = make([]ParkedEffect, len(fx))
	for i, pe := range fx {
		obs.ParkedEffects[i] = ParkedEffect(pe)
	}
	if obs.ReadModel, err = domain.Load(ctx, e.Pool, e.Projection.Schema()); err != nil {
		return obs, err
	}
	obs.Mails, err = e.S.Mailpit.MessageIDs(ctx, e.Name)
	return obs, err
}

// Owners returns each partition's stored owner (member id).
func (e *Env) Owners(ctx context.Context) map[int]string {
	out, _ := store.OffsetOwners(ctx, e.Pool, e.Schema, e.Name) // unanswered: the owners read so far
	if out == nil {
		out = map[int]string{}
	}
	return out
}

// MessageIDs lists the Message-ID of every message whose recipient contains to.
func (m *Mailpit) MessageIDs(ctx context.Context, to string) ([]string, error) {
	var out []string
	for start := 0; ; {
		q := fmt.Sprintf("%s/api/v1/search?query=%s&start=%d&limit=1000", m.APIURL(), url.QueryEscape("to:"+to), start)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, q, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("mailpit search: %w", err)
		}
		var body struct {
			Total    int `json:"messages_count"`
			Messages []struct {
				MessageID string `json:"MessageID"`
			} `json:"messages"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("mailpit search: %w", err)
		}
		for _, msg := range body.Messages {
			out = append(out, msg.MessageID)
		}
		start += len(body.Messages)
		if len(body.Messages) == 0 || start >= body.Total {
			return out, nil
		}
	}
}

// WaitMails waits until every key the fold expects has a mail, or d passes.
func (e *Env) WaitMails(ctx context.Context, d time.Duration) error {
	obs, err := e.Observe(ctx)
	if err != nil {
		return err
	}
	f, err := FoldLog(e.Reg, obs)
	if err != nil {
		return err
	}
	return WaitFor(ctx, d, fmt.Sprintf("%d welcome mails", len(f.Welcome)), func() bool {
		ids, err := e.S.Mailpit.MessageIDs(ctx, e.Name)
		if err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, id := range ids {
			seen[id] = true
		}
		for k := range f.Welcome {
			if !seen[k] {
				return false
			}
		}
		return true
	})
}

// HTTPGetJSON fetches a URL into v.
func HTTPGetJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
