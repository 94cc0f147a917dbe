package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/eventlog/doctor"
)

// Defaults for check.
const checkLimitDefault = 20

// Exit codes of check.
const (
	exitProblems   = 1 // the log has problems
	exitUsage      = 2 // bad flags or arguments
	exitScanFailed = 3 // the scan could not be done
)

// checkUsage is check's help.
const checkUsage = `producer check [TOPIC]: the log doctor. Scans the topic (default --topic), or a
range of it, and reports every record that would make a read model differ from
the fold of the log:

  misrouted          a keyed record on a partition its key does not hash to
                     (murmur2, as the Java client; history written before the
                     partition count grew is accepted); the report names the
                     expected partition and the producer setting that fixes it
  key-not-subject    a key other than the event's subject, or no key on another
                     partition than the subject's
  undecodable        a record the decoder refuses (bad attribute, data that is
                     not valid JSON, UTF-8, or NUL-free), with its error
  missing-attribute  no id, source, type or subject, or half the encryption ones
  duplicate          an event id at two offsets, with both
  gap, swap, stale   per aggregate and partition, by the sequence extension:
                     sequences missing; a lower sequence arriving late with a new
                     id; a sequence already taken by another id
  plaintext-personal personal fields of an example-domain type (UserRegistered:
                     email, name) not covered by the encryption attributes
  data               (--deep) data that does not decode into its Go type

A human table by default (at most --limit rows of each kind), --json for
scripts. A progress bar on standard error when it is a terminal.

Exit status: 0 nothing found, 1 problems found, 2 bad usage, 3 the scan could
not be done (Kafka unreachable, no such topic).

Ranges: --from and --to take offsets, one for every partition (100), some
partitions' own (0:100,3:40), or both (100,3:40); --to is exclusive and stops at
the log's end. --since and --until take record times: RFC 3339
(2026-11-26T10:00:00Z), a date (2026-11-26, UTC), or a duration ago (90m, 36h,
7d). A range that starts mid-log takes each aggregate's first sequence in it as
its baseline.

Memory: each aggregate keeps its last --window event ids; every id also goes
into one set of 64-bit hashes, 11 to 22 bytes a record (10 million records: 128
MiB). A duplicate beyond the window is located by a second pass.`

func runCheck(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	var brokers, topic, parts, from, to, since, until string
	var asJSON, skipData, deep bool
	var limit, maxFindings, window, concurrency int
	f := cli.NewFlags("check", checkUsage)
	f.String(&brokers, "brokers", "KAFKA_BROKERS", BrokersDefault, "Kafka brokers, comma-separated host:port")
	f.String(&topic, "topic", "PROJECTOR_TOPIC", TopicDefault, "the event topic, when not given as the argument")
	f.String(&parts, "partition", "", "", "only these partitions, comma-separated; empty: all")
	f.String(&from, "from", "", "", "first offsets to read; empty: each partition's log start")
	f.String(&to, "to", "", "", "offsets to stop before; empty: each partition's end when the scan starts")
	f.String(&since, "since", "", "", "first record time to read (RFC 3339, a date, or a duration ago)")
	f.String(&until, "until", "", "", "record time to stop before")
	f.Bool(&asJSON, "json", "", false, "write the report as JSON")
	f.Int(&limit, "limit", "", checkLimitDefault, "table rows per kind of problem (0: every finding kept)")
	f.Int(&maxFindings, "max-findings", "", doctor.MaxFindingsDefault, "findings kept per kind (counts are always exact)")
	f.Int(&window, "window", "", doctor.WindowDefault, "recent event ids each aggregate remembers")
	f.Int(&concurrency, "concurrency", "", doctor.ConcurrencyDefault, "partitions read at once")
	f.Bool(&skipData, "skip-data", "", false, "do not check the data's JSON (faster; undecodable data goes unreported)")
	f.Bool(&deep, "deep", "", false, "also decode each example-domain event's data into its Go type")
	if err := f.Parse(args, stdout); err != nil {
		return usageErr(err)
	}
	switch len(f.Args()) {
	case 0:
	case 1:
		topic = f.Args()[0]
	default:
		return usageErr(fmt.Errorf("check takes one argument, the topic; got %d: %s", len(f.Args()), strings.Join(f.Args(), " ")))
	}
	cfg := doctor.Config{Brokers: cli.SplitList(brokers), Topic: topic, Registry: registry(),
		MaxFindings: maxFindings, Window: window, Concurrency: concurrency, SkipData: skipData, Deep: deep}
	if err := checkSettings(&cfg, parts, from, to, since, until, limit, time.Now()); err != nil {
		return usageErr(err)
	}
	bar := &progressBar{out: stderr}
	if cli.IsTerminal(os.Stderr) {
		cfg.Progress = bar.show
	}
	rep, err := doctor.Scan(ctx, cfg)
	bar.clear()
	if err != nil {
		return &exitError{code: exitScanFailed, err: kafkaErr(cfg.Brokers, err)}
	}
	if asJSON {
		err = printJSON(stdout, rep)
	} else {
		err = rep.WriteTable(stdout, limit)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return &exitError{code: exitProblems, err: fmt.Errorf("%d problems in %s", rep.Problems(), topic)}
	}
	return nil
}

// checkSettings validates check's flags into cfg; the error names the flag.
func checkSettings(cfg *doctor.Config, parts, from, to, since, until string, limit int, now time.Time) error {
	if len(cfg.Brokers) == 0 {
		return errors.New("--brokers (KAFKA_BROKERS) is empty")
	}
	if strings.TrimSpace(cfg.Topic) == "" {
		return errors.New("no topic: give it as the argument (producer check TOPIC) or with --topic")
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"--max-findings", cfg.MaxFindings}, {"--window", cfg.Window}, {"--concurrency", cfg.Concurrency}} {
		if n.v < 1 {
			return fmt.Errorf("%s %d: must be at least 1", n.name, n.v)
		}
	}
	if limit < 0 {
		return fmt.Errorf("--limit %d: must not be negative", limit)
	}
	for p := range strings.SplitSeq(parts, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return fmt.Errorf("--partition %q: %q is not a partition number", parts, p)
		}
		cfg.Partitions = append(cfg.Partitions, n)
	}
	var err error
	if cfg.From, err = doctor.ParseOffsets(from); err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	if cfg.To, err = doctor.ParseOffsets(to); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if cfg.Since, err = parseWhen(since, now); err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	if cfg.Until, err = parseWhen(until, now); err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	switch {
	case !cfg.From.IsZero() && !cfg.Since.IsZero():
		return errors.New("--from and --since both set: start by offset or by time, not both")
	case !cfg.To.IsZero() && !cfg.Until.IsZero():
		return errors.New("--to and --until both set: end by offset or by time, not both")
	case !cfg.Since.IsZero() && !cfg.Until.IsZero() && !cfg.Since.Before(cfg.Until):
		return fmt.Errorf("--since %s is not before --until %s", cfg.Since.Format(time.RFC3339), cfg.Until.Format(time.RFC3339))
	}
	return nil
}

// parseWhen reads a time: RFC 3339, a date (UTC), or a duration before now (a "d"
// suffix counts days). Empty gives the zero time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		var n float64
		if n, err = strconv.ParseFloat(days, 64); err == nil {
			d = time.Duration(n * float64(24*time.Hour))
		}
	}
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-26T10:00:00Z), a date (2026-11-26) or a duration ago (90m, 36h, 7d)", s)
	}
	return now.Add(-d), nil
}

// progressBar draws the scan's progress on one terminal line.
type progressBar struct {
	out   io.Writer
	drawn bool
}

func (b *progressBar) show(p doctor.Progress) {
	const width = 30
	frac := 1.0
	if p.Total > 0 {
		frac = min(1, float64(p.Records)/float64(p.Total))
	}
	fill := int(frac * width)
	what := "scanning"
	if p.Pass == 2 {
		what = "locating duplicates"
	}
	line := fmt.Sprintf("\r%s [%s%s] %3.0f%% %d/%d", what, strings.Repeat("#", fill), strings.Repeat(".", width-fill), frac*100, p.Records, p.Total)
	if secs := p.Elapsed.Seconds(); secs > 0.5 && p.Pass == 1 {
		rate := float64(p.Records) / secs
		line += fmt.Sprintf("  %.0f/s", rate)
		if rate > 0 && frac < 1 {
			line += fmt.Sprintf("  ETA %s", time.Duration(float64(p.Total-p.Records)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	_, _ = fmt.Fprintf(b.out, "%s\x1b[K", line)
	b.drawn = true
}

func (b *progressBar) clear() {
	if b.drawn {
		_, _ = fmt.Fprint(b.out, "\r\x1b[K")
	}
}
