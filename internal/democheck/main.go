// Command democheck is make demo's independent checker: it folds the log of the
// example domain itself and compares the fold with a read model's tables, and counts
// welcome mails in Mailpit against the registrations in the log. It exits non-zero
// when a check fails, printing what differs.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
	"github.com/projector/projector/pkg/sideeffects"
)

func main() {
	var brokers, topic, dbURL, schema, until, prefix, mailpit, noTrace, snapDir, killedAt, framework, between string
	flag.StringVar(&brokers, "brokers", os.Getenv("KAFKA_BROKERS"), "Kafka brokers")
	flag.StringVar(&topic, "topic", "", "topic")
	flag.StringVar(&dbURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL")
	flag.StringVar(&schema, "schema", "", "read model schema to compare with the fold (empty: no comparison)")
	flag.StringVar(&until, "until", "", "fold only offsets below PARTITION:OFFSET,… (default: the whole log)")
	flag.StringVar(&prefix, "mails-for", "", "check one welcome mail per registration of users with this id prefix")
	flag.StringVar(&mailpit, "mailpit", os.Getenv("MAILPIT_URL"), "Mailpit API base URL")
	flag.StringVar(&noTrace, "no-trace", "", "personal data (comma-separated) that must be nowhere: not in the log's bytes, the schema's tables or --snapshot-dir's files")
	flag.StringVar(&snapDir, "snapshot-dir", "", "with --no-trace: a snapshot folder to search")
	flag.StringVar(&killedAt, "killed-at", "", "check that this projection's stored position (version 1) is within --between of the log: where a kill landed")
	flag.StringVar(&framework, "framework-schema", "projector", "with --killed-at: the framework schema holding the positions")
	flag.StringVar(&between, "between", "10,90", "with --killed-at: the bounds, in percent of the log, strictly between which the position must be")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var err error
	if killedAt != "" {
		err = checkKill(ctx, strings.Split(brokers, ","), topic, dbURL, framework, killedAt, between)
	} else {
		err = run(ctx, strings.Split(brokers, ","), topic, dbURL, schema, until, prefix, mailpit)
	}
	if err == nil && noTrace != "" {
		err = checkNoTrace(ctx, strings.Split(brokers, ","), topic, dbURL, schema, snapDir, strings.Split(noTrace, ","))
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "CHECK FAILED:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, brokers []string, topic, dbURL, schema, until, prefix, mailpit string) error {
	upTo, err := parseUntil(until)
	if err != nil {
		return err
	}
	evs, err := readLog(ctx, brokers, topic, upTo, nil)
	if err != nil {
		return err
	}
	if schema != "" {
		if err := checkFold(ctx, dbURL, schema, evs); err != nil {
			return err
		}
	}
	if prefix != "" {
		return checkMails(ctx, mailpit, prefix, evs)
	}
	return nil
}

// checkFold checks that the read model in schema equals an independent fold of
// the log's events.
func checkFold(ctx context.Context, dbURL, schema string, evs []events.Event) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Personal fields are encrypted in the log: the fold decrypts them with the
	// key store, as the projector does (forgotten users' fields come redacted).
	if mk := os.Getenv(shred.MasterKeyEnv); mk != "" {
		master, err := shred.ParseMasterKey(mk)
		if err != nil {
			return err
		}
		// The key store is shared: the stack's database, whatever the read model's.
		keyPool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
		if err != nil {
			return err
		}
		defer keyPool.Close()
		keys, err := shred.OpenPG(ctx, keyPool, master, shred.PGOptions{})
		if err != nil {
			return err
		}
		if err := shred.OpenAll(ctx, keys, evs); err != nil {
			return err
		}
	}
	want, err := domain.Fold(domain.Registry(), evs)
	if err != nil {
		return err
	}
	got, err := domain.Load(ctx, pool, schema)
	if err != nil {
		return err
	}
	if d := domain.Diff(want, got, 5); d != "" {
		return fmt.Errorf("schema %s differs from the fold of %d events: %s", schema, len(evs), d)
	}
	fmt.Printf("check: schema %s equals an independent fold of the log's %d events (%d users, %d articles)\n",
		schema, len(evs), len(want.Users), len(want.Articles))
	return nil
}

// checkMails checks that every user registered under prefix got one welcome mail,
// the Message-ID its registration's idempotency key makes.
func checkMails(ctx context.Context, mailpit, prefix string, evs []events.Event) error {
	regs := map[string]bool{}
	for _, e := range evs {
		if e.Type == domain.TypeUserRegistered && strings.HasPrefix(e.Subject, prefix) {
			regs[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = true
		}
	}
	ids, total, err := mails(ctx, mailpit, "@"+prefix+".example.test")
	if err != nil {
		return err
	}
	for id := range ids {
		if !regs[id] {
			return fmt.Errorf("a mail with Message-ID %s matches no registration", id)
		}
	}
	if len(ids) != len(regs) {
		return fmt.Errorf("%d of %d registered users got their welcome mail", len(ids), len(regs))
	}
	fmt.Printf("check: %d users registered, %d welcome mails, one per user", len(regs), len(ids))
	if total > len(ids) {
		fmt.Printf(" (%d sent again after a crash, each with its first Message-ID)", total-len(ids))
	}
	fmt.Println()
	return nil
}

// checkKill reads where a projection stands (its stored positions, summed over the
// partitions) and the log's end, and checks the position is strictly between the
// bounds (in percent of the log): a kill at 0% or at the end proves nothing.
func checkKill(ctx context.Context, brokers []string, topic, dbURL, framework, projection, between string) error {
	lo, hi, err := parseBetween(between)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	at, err := store.SumNextOffsets(ctx, conn, framework, projection, 1, topic)
	if err != nil {
		return err
	}
	st, err := admin.LogStarts(ctx, brokers, topic)
	if err != nil {
		return err
	}
	client := eventlog.NewClient(brokers)
	defer client.Close()
	var reqs []kafka.OffsetRequest
	for p := range st {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := client.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return err
	}
	var end int64
	for _, po := range resp.Topics[topic] {
		end += po.LastOffset
	}
	verdict, err := judgeKill(at, end, lo, hi)
	fmt.Println("check:", verdict)
	return err
}

// judgeKill says where a kill landed, and fails unless it is strictly between lo%
// and hi% of the log.
func judgeKill(at, end int64, lo, hi float64) (string, error) {
	pct := 0.0
	if end > 0 {
		pct = 100 * float64(at) / float64(end)
	}
	verdict := fmt.Sprintf("killed at %d of %d events (%.1f%%)", at, end, pct)
	if end == 0 || pct <= lo || pct >= hi {
		return verdict, fmt.Errorf("%s: not strictly between %g%% and %g%% of the log, so the kill proves nothing", verdict, lo, hi)
	}
	return verdict + fmt.Sprintf(": mid-replay, between %g%% and %g%% of the log", lo, hi), nil
}

func parseBetween(s string) (lo, hi float64, err error) {
	a, b, ok := strings.Cut(s, ",")
	lo, err1 := strconv.ParseFloat(a, 64)
	hi, err2 := strconv.ParseFloat(b, 64)
	if !ok || err1 != nil || err2 != nil || lo < 0 || hi > 100 || lo >= hi {
		return 0, 0, fmt.Errorf("--between %q: want LOW,HIGH percent, 0 <= LOW < HIGH <= 100", s)
	}
	return lo, hi, nil
}

func parseUntil(s string) (map[int]int64, error) {
	if s == "" {
		return nil, nil
	}
	out := map[int]int64{}
	for _, pair := range strings.Split(s, ",") {
		p, o, ok := strings.Cut(pair, ":")
		pi, err1 := strconv.Atoi(p)
		oi, err2 := strconv.ParseInt(o, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--until: %q is not PARTITION:OFFSET", pair)
		}
		out[pi] = oi
	}
	return out, nil
}

// readLog reads the log up to upTo (nil: its end); raw, when set, sees every message.
func readLog(ctx context.Context, brokers []string, topic string, upTo map[int]int64, raw func(kafka.Message)) ([]events.Event, error) {
	st, err := admin.LogStarts(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	client := eventlog.NewClient(brokers)
	defer client.Close()
	var reqs []kafka.OffsetRequest
	for p := range st {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := client.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	var out []events.Event
	for _, po := range resp.Topics[topic] {
		end := po.LastOffset
		if upTo != nil {
			end = min(end, upTo[po.Partition])
		}
		if end <= st[po.Partition] {
			continue
		}
		err := readPartition(ctx, brokers, topic, po.Partition, st[po.Partition], end, func(m kafka.Message) {
			if raw != nil {
				raw(m)
			}
			if e, err := eventlog.FromMessage(m); err == nil {
				out = append(out, e)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readPartition calls fn for each message of a partition from start up to end, over
// a reader it closes.
func readPartition(ctx context.Context, brokers []string, topic string, part int, start, end int64, fn func(kafka.Message)) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: part, MaxBytes: 16 << 20, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(start); err != nil {
		return err
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		fn(m)
		if m.Offset >= end-1 {
			return nil
		}
	}
}

func mails(ctx context.Context, api, to string) (map[string]bool, int, error) {
	if api == "" {
		return nil, 0, errors.New("no Mailpit URL (--mailpit or MAILPIT_URL)")
	}
	ids := map[string]bool{}
	total := 0
	for start := 0; ; {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("%s/api/v1/search?query=%s&start=%d&limit=1000", api, url.QueryEscape("to:"+to), start), nil)
		if err != nil {
			return nil, 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, err
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
			return nil, 0, err
		}
		for _, m := range body.Messages {
			ids[m.MessageID] = true
		}
		total += len(body.Messages)
		start += len(body.Messages)
		if len(body.Messages) == 0 || start >= body.Total {
			return ids, total, nil
		}
	}
}

// checkNoTrace searches for each text in the log's raw messages (value and headers),
// in every table of the schema (and the framework's), and in every file of the
// snapshot folder. The log must hold ciphertext only, the tables and snapshots none.
func checkNoTrace(ctx context.Context, brokers []string, topic, dbURL, schema, snapDir string, texts []string) error {
	found := map[string][]string{}
	msgs, err := traceInLog(ctx, brokers, topic, texts, found)
	if err != nil {
		return err
	}
	tables := 0
	if schema != "" {
		if tables, err = traceInTables(ctx, dbURL, schema, texts, found); err != nil {
			return err
		}
	}
	files := 0
	if snapDir != "" {
		if files, err = traceInFiles(snapDir, texts, found); err != nil {
			return err
		}
	}
	for _, t := range texts {
		if len(found[t]) > 0 {
			return fmt.Errorf("%q is still in %s", t, strings.Join(found[t], ", "))
		}
	}
	fmt.Printf("check: none of %d pieces of personal data in the log's %d messages, %d tables or %d snapshot files\n", len(texts), msgs, tables, files)
	return nil
}

// traceInLog adds to found where each text is in the log's records, and returns how
// many it read.
func traceInLog(ctx context.Context, brokers []string, topic string, texts []string, found map[string][]string) (int, error) {
	msgs := 0
	_, err := readLog(ctx, brokers, topic, nil, func(m kafka.Message) {
		msgs++
		for _, t := range texts {
			hit := bytes.Contains(m.Value, []byte(t)) || bytes.Contains(m.Key, []byte(t))
			for _, h := range m.Headers {
				hit = hit || bytes.Contains(h.Value, []byte(t))
			}
			if hit {
				found[t] = append(found[t], fmt.Sprintf("the log (partition %d offset %d)", m.Partition, m.Offset))
			}
		}
	})
	return msgs, err
}

// traceInTables adds to found the tables of schema, and of the framework, with
// rows holding a text, and returns how many tables it read.
func traceInTables(ctx context.Context, dbURL, schema string, texts []string, found map[string][]string) (int, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ($1, 'projector')`, schema)
	if err != nil {
		return 0, err
	}
	names, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]string, error) {
		var n [2]string
		err := row.Scan(&n[0], &n[1])
		return n, err
	})
	if err != nil {
		return 0, err
	}
	for _, n := range names {
		id := pgx.Identifier{n[0], n[1]}.Sanitize()
		for _, t := range texts {
			var c int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+id+` x WHERE strpos(x::text, $1) > 0`, t).Scan(&c); err != nil {
				return 0, err
			}
			if c > 0 {
				found[t] = append(found[t], fmt.Sprintf("%s (%d rows)", id, c))
			}
		}
	}
	return len(names), nil
}

// traceInFiles adds to found the files under dir holding a text, and returns how
// many it read.
func traceInFiles(dir string, texts []string, found map[string][]string) (int, error) {
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, t := range texts {
			if bytes.Contains(b, []byte(t)) {
				found[t] = append(found[t], path)
			}
		}
		return nil
	})
	return files, err
}
