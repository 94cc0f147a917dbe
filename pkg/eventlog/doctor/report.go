package doctor

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/projector/projector/pkg/eventlog"
)

// Kind names a kind of problem.
type Kind string

// The kinds of problem the doctor reports, in the order the report lists them.
const (
	// KindMisrouted: a keyed record on a partition its key does not hash to.
	KindMisrouted Kind = "misrouted"
	// KindKeyNotSubject: the record's key differs from its subject, or it has no key
	// and its subject hashes to another partition.
	KindKeyNotSubject Kind = "key-not-subject"
	// KindUndecodable: the decoder refuses the record (an invalid attribute, data
	// that is not valid JSON, UTF-8 or NUL-free, …).
	KindUndecodable Kind = "undecodable"
	// KindMissingAttribute: a required attribute (id, source, type, subject, or one
	// of the encryption attributes) is missing.
	KindMissingAttribute Kind = "missing-attribute"
	// KindDuplicate: an event id already seen at another offset.
	KindDuplicate Kind = "duplicate"
	// KindGap: sequences of an aggregate that never appear after a higher one did.
	KindGap Kind = "gap"
	// KindSwap: a sequence lower than one already seen, with a new id, that fills a
	// gap: the events of the aggregate are out of order in the log.
	KindSwap Kind = "swap"
	// KindStale: a sequence already taken by another event id of the aggregate.
	KindStale Kind = "stale"
	// KindPlaintextPersonal: personal fields of the event's type hold values the
	// encryption attributes do not cover.
	KindPlaintextPersonal Kind = "plaintext-personal"
	// KindDeep: with Config.Deep, the data does not decode into the type's Go type.
	KindDeep Kind = "data"
)

// Advice says, per kind, what the problem usually means and what to do.
var Advice = map[Kind]string{
	KindMisrouted: "a producer does not partition by murmur2 of the key. Fix it: " + eventlog.FixPartitioner +
		". The records already misrouted stay where they are; the runtime reports them where it reads them.",
	KindKeyNotSubject:    "set the record key to the event's subject (the aggregate id), and partition by murmur2 of it.",
	KindUndecodable:      "fix the producer; the runtime parks these records with the same error (projector dlq list).",
	KindMissingAttribute: "fix the producer: every event needs id, source, type and subject (binary mode: ce_id, ce_source, ce_type, ce_subject headers; see docs/producing.md).",
	KindDuplicate: "a retried write (kafka-go and librdkafka without idempotence can write a batch twice) or an id reused; " +
		"the runtime applies an id once, so if one id carries two different events, the second is lost: give every event its own id.",
	KindGap:   "events of the aggregate are missing from the log: a write that failed for good, or a producer that skips sequences.",
	KindSwap:  "the aggregate's events are out of order in the log: a late retry, or two writers; the runtime applies or parks it, never drops it.",
	KindStale: "two events claim the same sequence: a second writer for the aggregate, or a write retried under a new id.",
	KindPlaintextPersonal: "publish through producer (CLI or HTTP ingest) with a master key, which encrypts personal fields under the subject's key; " +
		"plaintext already in the log can never be forgotten.",
	KindDeep: "the data does not fit the registered Go type: fix the producer, or add an upcaster for the old schema.",
}

// Kinds lists every kind, in report order.
var Kinds = []Kind{KindMisrouted, KindKeyNotSubject, KindUndecodable, KindMissingAttribute, KindDuplicate,
	KindGap, KindSwap, KindStale, KindPlaintextPersonal, KindDeep}

// Location is a record's place in the topic.
type Location struct {
	Partition int   `json:"partition"`
	Offset    int64 `json:"offset"`
}

func (l Location) String() string { return fmt.Sprintf("%d@%d", l.Partition, l.Offset) }

// Finding is one problem, at one record.
type Finding struct {
	Kind      Kind   `json:"kind"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Subject   string `json:"subject,omitempty"` // the aggregate (the key when the subject is missing)
	ID        string `json:"id,omitempty"`
	Type      string `json:"type,omitempty"`
	Sequence  uint64 `json:"sequence,omitempty"`
	// Expected is the partition the key hashes to (misrouted).
	Expected *int `json:"expected_partition,omitempty"`
	// Also lists the other records holding the same event id (duplicate), or the
	// record with the higher sequence seen first (swap, gap) or holding the same
	// sequence (stale).
	Also []Location `json:"also,omitempty"`
	// Missing is the first and last sequence missing (gap).
	Missing []uint64 `json:"missing,omitempty"`
	// Field names the attribute or the data fields in question.
	Field string `json:"field,omitempty"`
	// Detail says what is wrong and, where there is one, what fixes it.
	Detail string `json:"detail"`
}

// Range is what was scanned of one partition: offsets From (inclusive) to To
// (exclusive).
type Range struct {
	Partition int   `json:"partition"`
	From      int64 `json:"from"`
	To        int64 `json:"to"`
	Records   int64 `json:"records"` // records read (offsets may hold none: control records)
}

// Report is the outcome of a scan.
type Report struct {
	Topic      string    `json:"topic"`
	Partitions int       `json:"partitions"`
	Ranges     []Range   `json:"ranges"`
	Records    int64     `json:"records"`
	Started    time.Time `json:"started"`
	Seconds    float64   `json:"seconds"`
	// FullHistory: every scanned partition was read from its log start, so an
	// aggregate's first sequence must be 1.
	FullHistory bool `json:"full_history"`
	// Passes is 2 when duplicates found through the id set needed a second pass
	// to locate their other offsets.
	Passes int `json:"passes"`
	// IDSetBytes is the memory of the set of id hashes.
	IDSetBytes int64 `json:"id_set_bytes"`
	// Counts holds every problem found, by kind (exact, however many findings are
	// listed).
	Counts map[Kind]int64 `json:"counts"`
	// Findings lists up to MaxFindings problems per kind, in partition and offset
	// order within each kind.
	Findings []Finding `json:"findings"`
	// Unlisted counts, per kind, the problems found beyond MaxFindings.
	Unlisted map[Kind]int64 `json:"unlisted,omitempty"`
}

// Problems is the number of problems found.
func (r *Report) Problems() int64 {
	var n int64
	for _, c := range r.Counts {
		n += c
	}
	return n
}

// OK reports whether the scan found no problem.
func (r *Report) OK() bool { return r.Problems() == 0 }

// sortFindings orders findings by kind (report order), then partition and offset.
func (r *Report) sortFindings() {
	rank := map[Kind]int{}
	for i, k := range Kinds {
		rank[k] = i
	}
	sort.SliceStable(r.Findings, func(i, j int) bool {
		a, b := &r.Findings[i], &r.Findings[j]
		if a.Kind != b.Kind {
			return rank[a.Kind] < rank[b.Kind]
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
}

// WriteTable writes the report for people: a summary, then one table row per
// finding, at most limit per kind (0: all that the report lists).
func (r *Report) WriteTable(w io.Writer, limit int) error {
	var sb strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&sb, f, a...) }
	scope := "from each partition's log start"
	if !r.FullHistory {
		scope = "a range"
	}
	p("topic %s: %d partitions, %d records scanned (%s) in %.1f s",
		r.Topic, r.Partitions, r.Records, scope, r.Seconds)
	if r.Seconds > 0 && r.Records > 0 {
		p(", %.0f records/s", float64(r.Records)/r.Seconds)
	}
	p("\n")
	if r.OK() {
		p("no problem found\n")
		_, err := io.WriteString(w, sb.String())
		return err
	}
	var counts []string
	for _, k := range Kinds {
		if c := r.Counts[k]; c > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", k, c))
		}
	}
	p("%d problems: %s\n\n", r.Problems(), strings.Join(counts, ", "))
	if _, err := io.WriteString(w, sb.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tPARTITION\tOFFSET\tSUBJECT\tSEQ\tID\tDETAIL")
	shown := map[Kind]int{}
	for _, f := range r.Findings {
		if limit > 0 && shown[f.Kind] >= limit {
			continue
		}
		shown[f.Kind]++
		seq := ""
		if f.Sequence > 0 {
			seq = strconv.FormatUint(f.Sequence, 10)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", f.Kind, f.Partition, f.Offset,
			cell(f.Subject, 40), seq, cell(f.ID, 40), oneLine(f.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var advice []string
	for _, k := range Kinds {
		if r.Counts[k] > 0 {
			advice = append(advice, fmt.Sprintf("  %s: %s", k, Advice[k]))
		}
	}
	if _, err := fmt.Fprintf(w, "\nwhat to do:\n%s\n", strings.Join(advice, "\n")); err != nil {
		return err
	}
	var more []string
	for _, k := range Kinds {
		if n := r.Counts[k] - int64(shown[k]); n > 0 {
			more = append(more, fmt.Sprintf("%d %s", n, k))
		}
	}
	if len(more) > 0 {
		_, err := fmt.Fprintf(w, "\nnot listed: %s (--json lists up to --max-findings of each kind)\n", strings.Join(more, ", "))
		return err
	}
	return nil
}

// cell quotes a value that would break the table and shortens a long one.
func cell(s string, width int) string {
	q := strconv.Quote(s)
	if q[1:len(q)-1] != s || strings.ContainsAny(s, " \t") {
		s = q
	}
	if len([]rune(s)) > width {
		s = string([]rune(s)[:width-1]) + "…"
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
