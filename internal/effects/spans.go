package effects

import (
	"maps"
	"time"
)

// A fold (a replay's transaction over many reads) hands the feed no events: it keeps
// only rows, and the effects would read its events from the log. But a new service
// replaying years of history with effects runs them for nothing: every event older
// than the effect's horizon is only counted, never run. Measured on the bench's
// million-event log, a replay with one effect took 47.2 s against 31.6–33.2 s
// without: the effects read and decoded the whole log a second time, behind the
// folds, to suppress it event by event.
//
// So a fold hands the feed a Span instead: its range of offsets, the newest time of
// its events (each event's own time, or the log's where it has none: what the
// horizon is judged on) and how many events of each type it holds. A lane standing
// at a span's start whose horizon is after the span's newest event passes the span
// unread: every event in it would have been suppressed. The others read it from the
// log, up to the span's end, where the next span starts.

// Span is a committed range of a partition that the feed does not carry.
type Span struct {
	From, Next int64          // the stored position it moved from and to
	Events     int64          // the records in it (offsets a transaction's markers hold are not)
	Newest     time.Time      // the newest event time in it; zero: unknown (never passed unread)
	Types      map[string]int // how many of its events are of each type
}

// maxSpans bounds the spans a feed keeps for a dispatcher behind them; beyond it
// the second and third oldest are merged (their newest time the later one's, their
// counts added): the oldest, where the dispatcher may stand, stays as it is.
const maxSpans = 1024

// Passed records a committed range whose events the feed does not carry (a fold's),
// as Publish with no entries does: the feed turns off and the position moves. The
// dispatcher reads the range from the log, unless its lanes may pass it unread.
func (f *Feed) Passed(s Span) {
	if f == nil {
		return
	}
	defer signal(f.wake)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.committed, f.on = max(f.committed, s.Next), false
	if f.stopped || s.Next <= s.From {
		return
	}
	f.spans = append(f.spans, s)
	if len(f.spans) > maxSpans {
		a, b := f.spans[1], f.spans[2]
		if a.Next != b.From { // a batch between them: the older is read from the log
			f.spans = append(f.spans[:1], f.spans[2:]...)
			return
		}
		merged := Span{From: a.From, Next: b.Next, Events: a.Events + b.Events, Newest: later(a.Newest, b.Newest), Types: maps.Clone(a.Types)}
		if a.Newest.IsZero() || b.Newest.IsZero() {
			merged.Newest = time.Time{}
		}
		if merged.Types == nil {
			merged.Types = map[string]int{}
		}
		for t, n := range b.Types {
			merged.Types[t] += n
		}
		f.spans = append(append(f.spans[:1], merged), f.spans[3:]...)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// spanAt returns the span holding pos, if one does (the spans wholly below pos are
// let go), or else where the next span starts above pos (0: none).
func (f *Feed) spanAt(pos int64) (s Span, ok bool, nextStart int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.spans) > 0 && f.spans[0].Next <= pos {
		f.spans = f.spans[1:]
	}
	if len(f.spans) == 0 {
		f.spans = nil
		return Span{}, false, 0
	}
	if f.spans[0].From <= pos {
		return f.spans[0], true, 0
	}
	return Span{}, false, f.spans[0].From
}
