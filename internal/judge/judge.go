package judge

import (
	"fmt"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// Verdict is what becomes of one event before its handler runs.
type Verdict struct {
	Act        Action // Apply runs the handler
	Reason     string // why it parks
	Behind     int64  // the offset it parks behind, or -1
	Alone      bool   // parks without holding its aggregate's later events
	Gap, Stale bool   // its sequence skipped ahead of, or is not ahead of, its aggregate's
}

// ParkVerdict parks with reason, behind the event at offset behind (or -1).
func ParkVerdict(reason string, behind int64) Verdict {
	return Verdict{Act: Park, Reason: reason, Behind: behind}
}

// Rules are what Judge needs to decide, all known before a batch's transaction.
type Rules struct {
	Partition   int
	Layout      *eventlog.Layout
	HaltOnGap   bool // GapHalt: a gap parks the event, and its aggregate behind it
	ParkUnknown bool // UnknownPark: a type absent from the registry parks
	Handles     func(eventType string) bool
	Retry       bool // an operator asked for these events: stale and misrouted ones apply
}

// Judge decides an event's fate, in this order: behind a parked event of its
// aggregate (held holds the batch's, parked the partition's); a problem found while
// decoding; misrouted; a proven duplicate; its sequence against its aggregate's
// (sequence); an unknown or unhandled type; else apply.
func (ru Rules) Judge(e *Entry, st *Marks, held, parked map[string]int64) Verdict {
	subj := e.Subject()
	// A forgetting is never held behind a parked event: it purges, idempotently,
	// whatever the subject's applied events wrote, whatever their order.
	forgetting := e.Event.Type == shred.TypeSubjectForgotten && e.Problem == nil
	if subj != "" && !forgetting {
		if off, ok := held[subj]; ok {
			return ParkVerdict(fmt.Sprintf("behind parked event at offset %d", off), off)
		}
		if off, ok := parked[subj]; ok && !ru.Retry {
			return ParkVerdict(fmt.Sprintf("behind parked event at offset %d", off), off)
		}
	}
	if e.Problem != nil {
		return ParkVerdict(e.Problem.Error(), -1)
	}
	if !ru.Retry && !forgetting {
		if reason := ru.misrouted(e); reason != "" {
			return ParkVerdict(reason, -1)
		}
	}
	var v Verdict
	if e.Event.Sequence > 0 {
		e.Prev = st.Aggs[subj]
		if v = ru.sequence(e, e.Prev); v.Act != Apply {
			return v
		}
	} else if st.SeenIDs[e.Event.ID] {
		return Verdict{Act: Duplicate}
	}
	switch {
	case e.Decoded == nil && ru.ParkUnknown:
		return ParkVerdict(fmt.Sprintf("%v: %q", events.ErrUnknownType, e.Event.Type), -1)
	case e.Decoded == nil || !ru.Handles(e.Event.Type):
		v.Act = Ignore
	}
	return v
}

// seqCase is how an event's sequence stands against its aggregate's mark.
type seqCase int

const (
	seqNext      seqCase = iota // the next one
	seqDuplicate                // its id is among the aggregate's applied ones
	seqGap                      // ahead by more than one
	seqConflict                 // at or below, and another id holds that sequence
	seqBeyond                   // at or below, older than the window reaches
	seqStale                    // at or below, within reach, never applied: a swap, a late first write
)

// classify places sequence seq, carried by id, against the aggregate's mark.
func classify(last Aggregate, seq uint64, id string) seqCase {
	switch {
	case last.holds(id):
		return seqDuplicate
	case seq == last.Seq+1:
		return seqNext
	case seq > last.Seq:
		return seqGap
	}
	if _, ok := last.holder(seq); ok {
		return seqConflict
	}
	if !last.reaches(seq) {
		return seqBeyond
	}
	return seqStale
}

// sequence decides what an event's sequence means for it: apply (possibly
// flagged), skip as a proven duplicate, or park with a reason naming the aggregate,
// both sequences, the ids and the place.
func (ru Rules) sequence(e *Entry, last Aggregate) Verdict {
	seq, subj, at := e.Event.Sequence, e.Subject(), fmt.Sprintf("partition %d offset %d", ru.Partition, e.Msg.Offset)
	c := classify(last, seq, e.Event.ID)
	switch c {
	case seqDuplicate:
		return Verdict{Act: Duplicate}
	case seqNext:
		return Verdict{Act: Apply}
	case seqGap:
		if ru.HaltOnGap {
			v := ParkVerdict(fmt.Sprintf("sequence gap: expected %d, got %d: aggregate %q at sequence %d (event %s), event %s at %s",
				last.Seq+1, seq, subj, last.Seq, last.ID, e.Event.ID, at), -1)
			v.Gap = true
			return v
		}
		return Verdict{Act: Apply, Gap: true}
	}
	// At or below the aggregate's sequence, and not a duplicate.
	v := Verdict{Act: Apply, Stale: true, Behind: -1}
	if ru.Retry {
		return v // an operator asked for it
	}
	v.Act, v.Alone = Park, true
	switch {
	case c == seqConflict:
		holder, _ := last.holder(seq)
		if holder == "" {
			holder = "another event"
		} else {
			holder = "event " + holder
		}
		v.Reason = fmt.Sprintf("sequence conflict: aggregate %q applied %s at sequence %d; event %s claims the same sequence (a second writer?) at %s; retry it to apply it as well, or skip it",
			subj, holder, seq, e.Event.ID, at)
	case c == seqBeyond:
		v.Reason = fmt.Sprintf("stale sequence: aggregate %q is at sequence %d (event %s); event %s has sequence %d, older than the last %d events remembered, so it cannot be proven a duplicate or new (%s); retry it to apply it, or skip it",
			subj, last.Seq, last.ID, e.Event.ID, seq, dedupeWindow, at)
	case ru.HaltOnGap:
		v.Reason = fmt.Sprintf("out of order: aggregate %q is at sequence %d (event %s); event %s has sequence %d and was never applied (%s); retry it to apply it",
			subj, last.Seq, last.ID, e.Event.ID, seq, at)
	default:
		v.Act, v.Alone = Apply, false
	}
	return v
}

// misrouted returns why a record breaks the partitioning contract (key = subject,
// murmur2 mod the partition count), or "" when it keeps it. Records without a key
// are never misrouted.
func (ru Rules) misrouted(e *Entry) string {
	key := e.Msg.Key
	if len(key) == 0 {
		return ""
	}
	if e.Event.Subject != "" && string(key) != e.Event.Subject {
		return fmt.Sprintf("misrouted: event %s has key %q but subject %q at partition %d offset %d; the contract is key = subject (fix the producer: %s)",
			Text(e.Event.ID), Text(string(key)), Text(e.Event.Subject), ru.Partition, e.Msg.Offset, eventlog.FixPartitioner)
	}
	if ru.Layout == nil {
		return ""
	}
	if m, ok := ru.Layout.Check(ru.Partition, key, e.Msg.Time); !ok {
		return fmt.Sprintf("event %s of aggregate %q at partition %d offset %d is %v", Text(e.Event.ID), Text(string(key)), ru.Partition, e.Msg.Offset, m)
	}
	return ""
}
