package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/sideeffects"
)

// Outcome is what a produce attempt learned.
type Outcome string

// Outcomes of a produce attempt.
const (
	OK      Outcome = "ok"      // acknowledged, at Partition/Offset
	Failed  Outcome = "failed"  // refused before it could be written
	Unknown Outcome = "unknown" // an error after sending: it may have landed
)

// Attempt is one produce attempt in the history.
type Attempt struct {
	EventID   string
	Subject   string
	Outcome   Outcome
	Partition int
	Offset    int64
	Err       string
	At        time.Time
}

// History records every produce attempt of a scenario. Safe for concurrent use.
type History struct {
	mu       sync.Mutex
	attempts []Attempt
}

// Record adds attempts.
func (h *History) Record(a ...Attempt) {
	h.mu.Lock()
	h.attempts = append(h.attempts, a...)
	h.mu.Unlock()
}

// Attempts returns a copy of the attempts so far.
func (h *History) Attempts() []Attempt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Attempt(nil), h.attempts...)
}

// Counts returns the number of attempts per outcome.
func (h *History) Counts() map[Outcome]int {
	out := map[Outcome]int{}
	for _, a := range h.Attempts() {
		out[a.Outcome]++
	}
	return out
}

// Record is one message of the log as read back: its place, and the event or why
// it does not decode.
type Record struct {
	Partition int
	Offset    int64
	Event     events.Event
	DecodeErr error
}

// ParkedRow is an event the projector parked.
type ParkedRow struct {
	Partition int
	Offset    int64
	EventID   string
	Subject   string
	Error     string
}

// AuditRow is one audited write of the offsets table.
type AuditRow struct {
	ID         int64
	Partition  int
	Member     string
	Generation int
	OldNext    *int64 // nil for an insert
	NewNext    int64
}

// Observed is what the oracle checks: the log read back, the history, and what the
// projector left in PostgreSQL and the mail sink.
type Observed struct {
	Log       []Record
	Stored    map[int]int64 // next_offset per partition
	Parked    []ParkedRow
	ReadModel domain.State
	Audit     []AuditRow
	Mails     []string // Message-IDs of every delivered mail, one per delivery
	// ParkedEffects are the effect runs the projector parked.
	ParkedEffects []ParkedEffect
}

// ParkedEffect is an effect run the projector parked.
type ParkedEffect struct {
	Key, EventID, Error string
}

// Check is one invariant's verdict with its evidence.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

func (c Check) String() string {
	r := "ok"
	if !c.OK {
		r = "FAIL"
	}
	return fmt.Sprintf("%-4s %s: %s", r, c.Name, c.Detail)
}

// Expect tunes the oracle to a scenario: what may legitimately be parked and how
// many repeated deliveries (always with the same key) the faults allow.
type Expect struct {
	// ParkedSubjects are the aggregates whose events may be parked (poison and the
	// events behind it); every undecodable record must be parked whatever this says.
	ParkedSubjects map[string]bool
	// MustPark are (partition, offset)-independent event ids or subjects that must be parked.
	MustParkSubjects map[string]bool
	// MaxRedelivered bounds mails sent again with the same key (0: exactly once).
	MaxRedelivered int
	// Effects: whether the welcome email ran; false skips the mail checks.
	Effects bool
	// AmbiguousKeys are idempotency keys whose run the projector logged as failed
	// after it may have reached the sink (a transient SMTP error, a timeout): a
	// repeated delivery of one of these, with the same key, is the retry the
	// README's contract allows, and is counted apart.
	AmbiguousKeys map[string]bool
	// Extra adds the scenario's own checks.
	Extra func(Observed) []Check
}

// Fold is the oracle's own fold: the log's records below the stored offsets, less
// the parked ones, deduplicated by event id, folded with
// the example domain's independent Fold.
type Fold struct {
	State    domain.State
	Applied  map[string]bool // event ids the fold applied
	Dups     int             // records dropped as an id already applied
	Stale    int             // records applied with a sequence at or below the aggregate's last (new ids)
	Settled  int             // records below the stored offsets
	Pending  int             // records at or above them
	Unparked []Record        // undecodable records below the stored offsets that are not parked
	Welcome  map[string]bool // Message-IDs the welcome email must have sent
}

// FoldLog computes the oracle's fold.
func FoldLog(reg *events.Registry, obs Observed) (Fold, error) {
	f := Fold{Applied: map[string]bool{}, Welcome: map[string]bool{}}
	parked := map[[2]int64]bool{}
	for _, p := range obs.Parked {
		parked[[2]int64{int64(p.Partition), p.Offset}] = true
	}
	recs := append([]Record(nil), obs.Log...)
	sort.SliceStable(recs, func(i, j int) bool {
		if recs[i].Partition != recs[j].Partition {
			return recs[i].Partition < recs[j].Partition
		}
		return recs[i].Offset < recs[j].Offset
	})
	lastSeq := map[string]uint64{}
	var evs []events.Event
	for _, r := range recs {
		if r.Offset >= obs.Stored[r.Partition] {
			f.Pending++
			continue
		}
		f.Settled++
		if parked[[2]int64{int64(r.Partition), r.Offset}] {
			continue
		}
		if r.DecodeErr != nil {
			f.Unparked = append(f.Unparked, r)
			continue
		}
		if _, err := reg.Decode(r.Event); err != nil {
			r.DecodeErr = err
			f.Unparked = append(f.Unparked, r)
			continue
		}
		e := r.Event
		if f.Applied[e.ID] {
			f.Dups++
			continue
		}
		// An event at or below its aggregate's sequence with a new id is applied in
		// log order (the runtime applies it under --gaps warn, or parks it, and a
		// parked record is not folded): counted, never dropped.
		if e.Sequence > 0 && e.Sequence <= lastSeq[e.Subject] {
			f.Stale++
		}
		f.Applied[e.ID] = true
		if e.Sequence > 0 {
			lastSeq[e.Subject] = max(lastSeq[e.Subject], e.Sequence)
		}
		evs = append(evs, e)
		if e.Type == domain.TypeUserRegistered {
			f.Welcome[domain.MessageID(sideeffects.Key(domain.WelcomeEmailEffect, e.ID))] = true
		}
	}
	s, err := domain.Fold(reg, evs)
	f.State = s
	return f, err
}

// checkParking checks that every undecodable record is parked, and every parked
// one has a reason and belongs to an aggregate the scenario poisoned.
func checkParking(f *Fold, obs Observed, exp Expect, parkedSubj map[string]bool) Check {
	var bad []string
	for _, r := range f.Unparked {
		bad = append(bad, fmt.Sprintf("%d/%d undecodable (%v) but not parked", r.Partition, r.Offset, r.DecodeErr))
	}
	for _, p := range obs.Parked {
		if strings.TrimSpace(p.Error) == "" {
			bad = append(bad, fmt.Sprintf("%d/%d parked without a reason", p.Partition, p.Offset))
		}
		// A late copy of an applied event, too far behind its aggregate to be proven a
		// duplicate, parks with its reason: recorded, not lost, and not poison.
		lateCopy := strings.HasPrefix(p.Error, "stale sequence:") && f.Applied[p.EventID]
		if !exp.ParkedSubjects[p.Subject] && !lateCopy {
			bad = append(bad, fmt.Sprintf("%d/%d (%s) parked: %s", p.Partition, p.Offset, p.Subject, p.Error))
		}
	}
	for s := range exp.MustParkSubjects {
		if !parkedSubj[s] {
			bad = append(bad, fmt.Sprintf("aggregate %q was not parked", s))
		}
	}
	return Check{"parked only poison, with reasons", len(bad) == 0, fmt.Sprintf("%d parked%s", len(obs.Parked), examples(bad))}
}

// checkNoFFFD checks that nothing in the read model carries a replacement
// character: no silent U+FFFD.
func checkNoFFFD(obs Observed) Check {
	var fffd []string
	for id, u := range obs.ReadModel.Users {
		if strings.ContainsRune(u.Name+u.Email+u.UserID, utf8.RuneError) {
			fffd = append(fffd, "user "+id)
		}
	}
	for id, a := range obs.ReadModel.Articles {
		if strings.ContainsRune(a.Title+a.Body+a.ArticleID, utf8.RuneError) {
			fffd = append(fffd, "article "+id)
		}
	}
	return Check{"no U+FFFD in the read model", len(fffd) == 0, fmt.Sprintf("%d rows with U+FFFD%s", len(fffd), examples(fffd))}
}

// checkNoneLost checks that nothing acknowledged is lost: each ok attempt is in the
// log at its offset, settled, and applied or parked.
func checkNoneLost(f *Fold, hist []Attempt, obs Observed, parkedIDs map[string]bool) Check {
	byPlace := map[[2]int64]Record{}
	for _, r := range obs.Log {
		byPlace[[2]int64{int64(r.Partition), r.Offset}] = r
	}
	var acked, lost, unknownLanded int
	var lostEx []string
	inLog := map[string]bool{}
	for _, r := range obs.Log {
		inLog[r.Event.ID] = true
	}
	for _, a := range hist {
		switch a.Outcome {
		case OK:
			acked++
			r, ok := byPlace[[2]int64{int64(a.Partition), a.Offset}]
			switch {
			case !ok || r.Event.ID != a.EventID:
				lost++
				lostEx = append(lostEx, fmt.Sprintf("%s not in the log at %d/%d", a.EventID, a.Partition, a.Offset))
			case !f.Applied[a.EventID] && !parkedIDs[a.EventID]:
				lost++
				lostEx = append(lostEx, fmt.Sprintf("%s at %d/%d neither applied nor parked", a.EventID, a.Partition, a.Offset))
			}
		case Unknown, Failed:
			if inLog[a.EventID] {
				unknownLanded++
			}
		}
	}
	return Check{"no acked event lost", lost == 0,
		fmt.Sprintf("%d acked, %d lost%s; %d failed/unknown attempts landed anyway", acked, lost, examples(lostEx), unknownLanded)}
}

// Verify runs every invariant on what was observed, with the history of attempts.
func Verify(reg *events.Registry, hist []Attempt, obs Observed, exp Expect) []Check {
	var out []Check
	f, err := FoldLog(reg, obs)
	if err != nil {
		return append(out, Check{"fold", false, err.Error()})
	}

	// Lag zero: every record of the log is settled.
	out = append(out, Check{"lag zero", f.Pending == 0,
		fmt.Sprintf("%d records in the log, %d settled below the stored offsets, %d pending", len(obs.Log), f.Settled, f.Pending)})

	// The read model equals the fold.
	d := domain.Diff(f.State, obs.ReadModel, 5)
	out = append(out, Check{"read model = fold", d == "",
		fmt.Sprintf("fold of %d applied events (%d id-duplicates dropped, %d stale sequences applied): %d users, %d articles; %s",
			len(f.Applied), f.Dups, f.Stale, len(f.State.Users), len(f.State.Articles), orStr(d, "equal"))})

	parkedIDs, parkedSubj := map[string]bool{}, map[string]bool{}
	for _, p := range obs.Parked {
		parkedIDs[p.EventID] = true
		parkedSubj[p.Subject] = true
	}
	out = append(out, checkNoneLost(&f, hist, obs, parkedIDs))

	out = append(out, checkParking(&f, obs, exp, parkedSubj))

	// Offsets never decrease; a fenced member never commits.
	back, stale, ex := AuditViolations(obs.Audit)
	out = append(out, Check{"offsets never decrease", back == 0, fmt.Sprintf("%d offset writes audited, %d went back%s", len(obs.Audit), back, examples(filter(ex, "back")))})
	out = append(out, Check{"fenced member never commits", stale == 0, fmt.Sprintf("%d writes by an older generation%s", stale, examples(filter(ex, "generation")))})

	out = append(out, checkNoFFFD(obs))
	if exp.Extra != nil {
		out = append(out, exp.Extra(obs)...)
	}
	if exp.Effects {
		c := CheckMails(f.Welcome, obs.Mails, exp.MaxRedelivered, exp.AmbiguousKeys)
		// An effect run parks with its event when the event is poison; any other
		// parked run is a mail that waits for a hand.
		var stray []string
		for _, pe := range obs.ParkedEffects {
			if !parkedIDs[pe.EventID] {
				stray = append(stray, pe.Key+": "+pe.Error)
			}
		}
		if len(stray) > 0 {
			c.OK = false
		}
		c.Detail += fmt.Sprintf("; %d effect runs parked, %d of them for an event that is not parked poison%s", len(obs.ParkedEffects), len(stray), examples(stray))
		out = append(out, c)
	}
	return out
}

// CheckMails checks the sink: every delivery carries an expected key, every key is
// delivered, and no more than maxRedelivered are delivered again, not counting
// repeats of keys whose run failed ambiguously (retried with the same key).
func CheckMails(want map[string]bool, mails []string, maxRedelivered int, ambiguous map[string]bool) Check {
	got := map[string]int{}
	var foreign []string
	explained := 0
	for _, m := range mails {
		got[m]++
		if !want[m] {
			foreign = append(foreign, m)
		}
		if got[m] > 1 && ambiguous[strings.TrimSuffix(m, "@projector.invalid")] {
			explained++
		}
	}
	var missing []string
	for k := range want {
		if got[k] == 0 {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	again := len(mails) - len(got)
	ok := len(foreign) == 0 && len(missing) == 0 && again-explained <= maxRedelivered
	return Check{"effects once, same key", ok, fmt.Sprintf("%d keys expected, %d mails, %d distinct, %d sent again (%d after a logged ambiguous failure of that key; allowed otherwise %d), %d with a foreign key%s, %d missing%s",
		len(want), len(mails), len(got), again, explained, maxRedelivered, len(foreign), examples(foreign), len(missing), examples(missing))}
}

// AuditViolations returns writes that moved an offset back, and writes by a
// generation older than one that already wrote the partition (a fenced member
// committing), in audit order.
func AuditViolations(rows []AuditRow) (back, stale int, ex []string) {
	rows = append([]AuditRow(nil), rows...)
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	maxGen := map[int]int{}
	for _, r := range rows {
		if r.OldNext != nil && r.NewNext < *r.OldNext {
			back++
			ex = append(ex, fmt.Sprintf("back: partition %d %d -> %d by %s/%d", r.Partition, *r.OldNext, r.NewNext, r.Member, r.Generation))
		}
		if g, ok := maxGen[r.Partition]; ok && r.Generation < g {
			stale++
			ex = append(ex, fmt.Sprintf("generation: partition %d written by %s at generation %d after generation %d", r.Partition, r.Member, r.Generation, g))
		}
		if r.Generation > maxGen[r.Partition] {
			maxGen[r.Partition] = r.Generation
		}
	}
	return back, stale, ex
}

func filter(xs []string, prefix string) []string {
	var out []string
	for _, x := range xs {
		if strings.HasPrefix(x, prefix) {
			out = append(out, x)
		}
	}
	return out
}

func examples(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	if len(xs) > 3 {
		return fmt.Sprintf(" (e.g. %s, … %d more)", strings.Join(xs[:3], "; "), len(xs)-3)
	}
	return " (" + strings.Join(xs, "; ") + ")"
}

func orStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FailedEffectKeys scans the projector logs under dir for effect runs that failed
// and were retried ("effect failed; retrying"), and returns their keys.
func FailedEffectKeys(dir string) map[string]bool {
	out := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(dir, "projector-*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "effect failed") {
				continue
			}
			var v struct {
				Key string `json:"key"`
			}
			if json.Unmarshal([]byte(line), &v) == nil && v.Key != "" {
				out[v.Key] = true
			}
		}
	}
	return out
}
