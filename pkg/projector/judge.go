package projector

import (
	"fmt"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/shred"
)

// verdict is what becomes of one event before its handler runs.
type verdict struct {
	act        action // actApply runs the handler
	reason     string // why it parks
	behind     int64  // the offset it parks behind, or -1
	alone      bool   // parks without holding its aggregate's later events
	gap, stale bool   // its sequence skipped ahead of, or is not ahead of, its aggregate's
}

func parkVerdict(reason string, behind int64) verdict {
	return verdict{act: actPark, reason: reason, behind: behind}
}

// rules are what judge needs to decide, all known before a batch's transaction.
type rules struct {
	partition int
	layout    *eventlog.Layout
	gaps      GapPolicy
	unknown   UnknownPolicy
	handles   func(eventType string) bool
	retry     bool // an operator asked for these events: stale and misrouted ones apply
}

func (r *Runner) rules(p *partition, retry bool) rules {
	return rules{partition: p.Key.Partition, layout: p.layout, gaps: r.cfg.Gaps, unknown: r.cfg.Unknown,
		handles: r.cfg.Projection.Handles, retry: retry}
}

// judge decides an event's fate, in this order: behind a parked event of its
// aggregate (held holds the batch's, parked the partition's); a problem found while
// decoding; misrouted; a proven duplicate; its sequence against its aggregate's
// (sequence); an unknown or unhandled type; else apply.
func (ru rules) judge(e *entry, st *txState, held, parked map[string]int64) verdict {
	subj := e.subject()
	// A forgetting is never held behind a parked event: it purges, idempotently,
	// whatever the subject's applied events wrote, whatever their order.
	forgetting := e.ev.Type == shred.TypeSubjectForgotten && e.problem == nil
	if subj != "" && !forgetting {
		if off, ok := held[subj]; ok {
			return parkVerdict(fmt.Sprintf("behind parked event at offset %d", off), off)
		}
		if off, ok := parked[subj]; ok && !ru.retry {
			return parkVerdict(fmt.Sprintf("behind parked event at offset %d", off), off)
		}
	}
	if e.problem != nil {
		return parkVerdict(e.problem.Error(), -1)
	}
	if !ru.retry && !forgetting {
		if reason := ru.misrouted(e); reason != "" {
			return parkVerdict(reason, -1)
		}
	}
	var v verdict
	if e.ev.Sequence > 0 {
		e.prev = st.aggs[subj]
		if v = ru.sequence(e, e.prev); v.act != actApply {
			return v
		}
	} else if st.seenIDs[e.ev.ID] {
		return verdict{act: actDuplicate}
	}
	switch {
	case e.decoded == nil && ru.unknown == UnknownPark:
		return parkVerdict(fmt.Sprintf("%v: %q", events.ErrUnknownType, e.ev.Type), -1)
	case e.decoded == nil || !ru.handles(e.ev.Type):
		v.act = actIgnore
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
func classify(last aggState, seq uint64, id string) seqCase {
	switch {
	case last.holds(id):
		return seqDuplicate
	case seq == last.seq+1:
		return seqNext
	case seq > last.seq:
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
func (ru rules) sequence(e *entry, last aggState) verdict {
	seq, subj, at := e.ev.Sequence, e.subject(), fmt.Sprintf("partition %d offset %d", ru.partition, e.msg.Offset)
	c := classify(last, seq, e.ev.ID)
	switch c {
	case seqDuplicate:
		return verdict{act: actDuplicate}
	case seqNext:
		return verdict{act: actApply}
	case seqGap:
		if ru.gaps == GapHalt {
			v := parkVerdict(fmt.Sprintf("sequence gap: expected %d, got %d: aggregate %q at sequence %d (event %s), event %s at %s",
				last.seq+1, seq, subj, last.seq, last.id, e.ev.ID, at), -1)
			v.gap = true
			return v
		}
		return verdict{act: actApply, gap: true}
	}
	// At or below the aggregate's sequence, and not a duplicate.
	v := verdict{act: actApply, stale: true, behind: -1}
	if ru.retry {
		return v // an operator asked for it
	}
	v.act, v.alone = actPark, true
	switch {
	case c == seqConflict:
		holder, _ := last.holder(seq)
		if holder == "" {
			holder = "another event"
		} else {
			holder = "event " + holder
		}
		v.reason = fmt.Sprintf("sequence conflict: aggregate %q applied %s at sequence %d; event %s claims the same sequence (a second writer?) at %s; retry it to apply it as well, or skip it",
			subj, holder, seq, e.ev.ID, at)
	case c == seqBeyond:
		v.reason = fmt.Sprintf("stale sequence: aggregate %q is at sequence %d (event %s); event %s has sequence %d, older than the last %d events remembered, so it cannot be proven a duplicate or new (%s); retry it to apply it, or skip it",
			subj, last.seq, last.id, e.ev.ID, seq, dedupeWindow, at)
	case ru.gaps == GapHalt:
		v.reason = fmt.Sprintf("out of order: aggregate %q is at sequence %d (event %s); event %s has sequence %d and was never applied (%s); retry it to apply it",
			subj, last.seq, last.id, e.ev.ID, seq, at)
	default:
		v.act, v.alone = actApply, false
	}
	return v
}

// misrouted returns why a record breaks the partitioning contract (key = subject,
// murmur2 mod the partition count), or "" when it keeps it. Records without a key
// are never misrouted.
func (ru rules) misrouted(e *entry) string {
	key := e.msg.Key
	if len(key) == 0 {
		return ""
	}
	if e.ev.Subject != "" && string(key) != e.ev.Subject {
		return fmt.Sprintf("misrouted: event %s has key %q but subject %q at partition %d offset %d; the contract is key = subject (fix the producer: %s)",
			text(e.ev.ID), text(string(key)), text(e.ev.Subject), ru.partition, e.msg.Offset, eventlog.FixPartitioner)
	}
	if ru.layout == nil {
		return ""
	}
	if m, ok := ru.layout.Check(ru.partition, key, e.msg.Time); !ok {
		return fmt.Sprintf("event %s of aggregate %q at partition %d offset %d is %v", text(e.ev.ID), text(string(key)), ru.partition, e.msg.Offset, m)
	}
	return ""
}
