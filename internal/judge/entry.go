package judge

import (
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/pkg/events"
)

// Action is what becomes of an event in its batch.
type Action int

// What becomes of an event.
const (
	Apply     Action = iota // its handler runs
	Ignore                  // no handler for it; its sequence or id still counts
	Duplicate               // a proven copy of an applied event: skipped
	Park                    // parked with a reason
)

// Entry is one message of a batch on its way through a transaction.
type Entry struct {
	Msg     kafka.Message
	Event   events.Event
	Decoded *events.Decoded // nil when the type is not registered (or not decoded for effects)
	Unread  error           // the record's own problem: not an event, or its personal data unreadable
	Problem error           // a permanent problem found while decoding
	Act     Action
	Reason  string // why it parks
	Behind  int64  // the offset it parks behind, or -1
	Gap     bool   // its sequence skipped ahead of its aggregate's
	Stale   bool   // its sequence is at or below its aggregate's, with an id not applied
	Alone   bool   // parked without holding its aggregate's later events
	Prev    Aggregate
	ParkID  int64 // in a retry: the parked row
}

// Subject returns the aggregate an entry belongs to: its event's subject, or its
// record's key.
func (e *Entry) Subject() string {
	if e.Event.Subject != "" {
		return e.Event.Subject
	}
	return string(e.Msg.Key)
}

// Marks is one transaction's view: the aggregates' marks and the seen ids it
// loaded, and what it changed.
type Marks struct {
	Aggs    map[string]Aggregate
	SeenIDs map[string]bool
	Changed map[string]Aggregate
	NewIDs  []string
}

// Mark records an applied (or ignored) event in the transaction's marks.
func (st *Marks) Mark(e *Entry) {
	if e.Event.Sequence > 0 {
		subj := e.Subject()
		a := st.Aggs[subj].with(e.Event.Sequence, e.Event.ID)
		st.Aggs[subj], st.Changed[subj] = a, a
		return
	}
	st.SeenIDs[e.Event.ID] = true
	st.NewIDs = append(st.NewIDs, e.Event.ID)
}

// OrderBySequence puts each aggregate's retried events in sequence order (events
// without a sequence keep their log order): a producer that wrote an aggregate's
// events out of order parks them as gaps, and a retry applies them as they were meant.
func OrderBySequence(entries []Entry) {
	first := map[string]int{}
	for i := range entries {
		if _, ok := first[entries[i].Subject()]; !ok {
			first[entries[i].Subject()] = i
		}
	}
	sort.SliceStable(entries, func(a, b int) bool {
		ea, eb := &entries[a], &entries[b]
		fa, fb := first[ea.Subject()], first[eb.Subject()]
		if fa != fb {
			return fa < fb
		}
		if ea.Event.Sequence > 0 && eb.Event.Sequence > 0 {
			return ea.Event.Sequence < eb.Event.Sequence
		}
		return false
	})
}

// Text makes a string safe for a PostgreSQL text column: a poison event's key, id or
// type may hold invalid UTF-8 or NUL bytes, and parking it must not fail on them.
func Text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// Storable reports whether s can be sent to PostgreSQL as text as it is.
func Storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}
