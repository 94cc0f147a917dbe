package doctor

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

// checker checks the records of one partition's range, in offset order. It is
// owned by the goroutine reading that partition; only the id set is shared.
type checker struct {
	s     *scan
	r     *partRange
	aggs  map[uint64]*aggregate // by hash of the subject
	found []Finding
	count map[Kind]int64
	// listed counts the findings kept per kind (found holds at most MaxFindings each).
	listed map[Kind]int
	// unlocated holds, for duplicates found through the id set alone, the id's
	// hash by index into found; their other offsets are located in a second pass.
	unlocated map[int]uint64
}

// aggregate is what a partition's scan remembers of one aggregate (subject).
type aggregate struct {
	max  uint64 // highest sequence seen; 0 = none yet
	seen []seenID
	next int   // ring position in seen once full
	gaps []gap // sequences skipped and not seen since
}

// seenID is a recent event of an aggregate.
type seenID struct {
	id     uint64 // hash of the event id
	offset int64
	seq    uint64
}

// gap is a run of sequences lo..hi skipped when the record at offset at jumped
// past them.
type gap struct {
	lo, hi  uint64
	at      int64
	subject string
}

func (s *scan) newChecker(r *partRange) *checker {
	return &checker{s: s, r: r, aggs: map[uint64]*aggregate{}, count: map[Kind]int64{},
		listed: map[Kind]int{}, unlocated: map[int]uint64{}}
}

// full counts a finding of kind k and reports whether its kind's list is full, so
// that a finding not kept is never built.
func (c *checker) full(k Kind) bool {
	if c.listed[k] < c.s.cfg.MaxFindings {
		return false
	}
	c.count[k]++
	return true
}

// add records a finding: counted always, kept up to MaxFindings of its kind.
func (c *checker) add(f Finding) int {
	c.count[f.Kind]++
	if c.listed[f.Kind] >= c.s.cfg.MaxFindings {
		return -1
	}
	c.listed[f.Kind]++
	f.Partition = c.r.part
	c.found = append(c.found, f)
	return len(c.found) - 1
}

// check checks one record.
func (c *checker) check(m *kafka.Message) {
	var a attrs
	a.readHeaders(m.Headers)
	var misroute *eventlog.Misroute
	if len(m.Key) > 0 {
		if mr, ok := c.s.layout.Check(c.r.part, m.Key, m.Time); !ok {
			misroute = &mr
		}
	}
	ok := !a.structured() && a.binaryOK(m.Key, m.Value, !c.s.cfg.SkipData)
	var decodeErr error
	if !ok {
		// The decoder has the last word, and gives the error to report.
		e, err := eventlog.FromMessage(*m)
		if err == nil {
			a.fromEvent(&e)
		}
		decodeErr = err
	}
	if misroute != nil && !c.full(KindMisrouted) {
		exp := misroute.Expected
		c.add(Finding{Kind: KindMisrouted, Offset: m.Offset, Subject: string(m.Key), ID: textOrEmpty(a.id),
			Type: textOrEmpty(a.typ), Sequence: a.sequence, Expected: &exp,
			Detail: fmt.Sprintf("key hashes to partition %d of %d (murmur2); the record is on partition %d", misroute.Expected, misroute.Partitions, misroute.Partition)})
	}
	if decodeErr != nil {
		c.undecodable(m, &a, decodeErr)
		return
	}
	switch {
	case len(m.Key) > 0 && !bytes.Equal(m.Key, a.subject) && !c.full(KindKeyNotSubject):
		c.add(Finding{Kind: KindKeyNotSubject, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
			Sequence: a.sequence, Field: "subject",
			Detail: fmt.Sprintf("key %q differs from subject %q: the key must be the subject, so that one aggregate's events share a partition", m.Key, a.subject)})
	case len(m.Key) == 0:
		// A record without a key is never misrouted; but one whose subject belongs on
		// another partition splits its aggregate, as a misrouted record would.
		if mr, ok := c.s.layout.Check(c.r.part, a.subject, m.Time); !ok && !c.full(KindKeyNotSubject) {
			c.add(Finding{Kind: KindKeyNotSubject, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
				Sequence: a.sequence, Field: "key",
				Detail: fmt.Sprintf("no key, and subject %q hashes to partition %d of %d (murmur2), not %d: its aggregate is split", a.subject, mr.Expected, mr.Partitions, mr.Partition)})
		}
	}
	if pd := c.s.personal[string(a.typ)]; pd != nil {
		c.checkPersonal(m, &a, pd)
	}
	if c.s.cfg.Deep && c.s.cfg.Registry != nil && c.s.cfg.Registry.Known(string(a.typ)) {
		c.checkDeep(m, &a)
	}
	c.checkOrder(m, &a)
}

func textOrEmpty(b []byte) string {
	if !textOK(b) {
		return ""
	}
	return string(b)
}

// undecodable reports a record the decoder refuses.
func (c *checker) undecodable(m *kafka.Message, a *attrs, err error) {
	kind := KindUndecodable
	if errors.Is(err, events.ErrMissingAttribute) {
		kind = KindMissingAttribute
	}
	var field string
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		field = ve.Field
	}
	subject := a.subject
	if len(subject) == 0 {
		subject = m.Key
	}
	c.add(Finding{Kind: kind, Offset: m.Offset, Subject: string(subject), ID: textOrEmpty(a.id), Type: textOrEmpty(a.typ),
		Field: field, Detail: err.Error()})
}

// checkPersonal reports personal fields whose values the encryption attributes do
// not cover. The data is decoded only when some personal field is not covered.
func (c *checker) checkPersonal(m *kafka.Message, a *attrs, pd *events.PersonalData) {
	covered := a.encryptedFields()
	var open []string
	for _, f := range pd.Fields {
		if !slices.Contains(covered, f) {
			open = append(open, f)
		}
	}
	if len(open) == 0 || len(m.Value) == 0 {
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(m.Value, &obj) != nil {
		return // not an object: no field to hold personal data
	}
	var plain []string
	for k, raw := range obj {
		for _, f := range open {
			// Go's decoder matches names case-insensitively: "Email" is read as email.
			if strings.EqualFold(k, f) && holdsValue(raw) {
				plain = append(plain, k)
			}
		}
	}
	if len(plain) == 0 || c.full(KindPlaintextPersonal) {
		return
	}
	slices.Sort(plain)
	why := "the record has no encryption attributes"
	if len(covered) > 0 {
		why = fmt.Sprintf("its encryptedfields (%s) leave them out", strings.Join(covered, ","))
	}
	c.add(Finding{Kind: KindPlaintextPersonal, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
		Sequence: a.sequence, Field: strings.Join(plain, ","),
		Detail: fmt.Sprintf("%s's personal fields %s are in plaintext: %s", a.typ, strings.Join(plain, ", "), why)})
}

// holdsValue reports whether a JSON value carries something: not null, not "".
func holdsValue(raw json.RawMessage) bool {
	v := bytes.TrimSpace(raw)
	return len(v) > 0 && !bytes.Equal(v, []byte("null")) && !bytes.Equal(v, []byte(`""`))
}

// checkDeep decodes the data into the type's Go type, as the runtime would after
// decryption (ciphertext fields are strings, as their plaintext is).
func (c *checker) checkDeep(m *kafka.Message, a *attrs) {
	e, err := eventlog.FromMessage(*m)
	if err != nil {
		return // reported already
	}
	e.Encryption, e.KeyID, e.EncryptedFields = "", "", nil
	if _, err := c.s.cfg.Registry.Decode(e); err != nil && !errors.Is(err, events.ErrUnknownType) {
		var field string
		var ve *events.ValidationError
		if errors.As(err, &ve) {
			field = ve.Field
		}
		c.add(Finding{Kind: KindDeep, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
			Sequence: a.sequence, Field: field, Detail: err.Error()})
	}
}

// checkOrder finds duplicate ids and the aggregate's gaps, swaps and stale sequences.
func (c *checker) checkOrder(m *kafka.Message, a *attrs) {
	idh := maphash.Bytes(c.s.seed, a.id)
	sh := maphash.Bytes(c.s.seed, a.subject)
	ag := c.aggs[sh]
	if ag == nil {
		ag = &aggregate{}
		c.aggs[sh] = ag
	}
	for _, s := range ag.seen {
		if s.id == idh {
			c.s.ids.add(idh)
			if c.full(KindDuplicate) {
				return
			}
			detail := fmt.Sprintf("event id seen before at offset %d of this partition: a retried write; the runtime applies it once", s.offset)
			if s.seq != a.sequence {
				detail = fmt.Sprintf("event id seen before at offset %d with sequence %d: the id is reused by another event; the runtime applies only the first", s.offset, s.seq)
			}
			c.add(Finding{Kind: KindDuplicate, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
				Sequence: a.sequence, Also: []Location{{Partition: c.r.part, Offset: s.offset}}, Detail: detail})
			return
		}
	}
	if c.s.ids.add(idh) {
		if c.full(KindDuplicate) {
			return
		}
		i := c.add(Finding{Kind: KindDuplicate, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
			Sequence: a.sequence, Detail: "event id seen before (see also): the runtime applies it once"})
		if i >= 0 {
			c.unlocated[i] = idh
		}
		return
	}
	if len(ag.seen) < c.s.cfg.Window {
		ag.seen = append(ag.seen, seenID{id: idh, offset: m.Offset, seq: a.sequence})
	} else {
		ag.seen[ag.next] = seenID{id: idh, offset: m.Offset, seq: a.sequence}
		ag.next = (ag.next + 1) % len(ag.seen)
	}
	seq := a.sequence
	if seq == 0 {
		return // no sequence: nothing to order
	}
	switch {
	case ag.max == 0:
		if c.r.fromStart && seq > 1 {
			ag.gaps = append(ag.gaps, gap{lo: 1, hi: seq - 1, at: m.Offset, subject: string(a.subject)})
		}
		ag.max = seq
	case seq == ag.max+1:
		ag.max = seq
	case seq > ag.max+1:
		ag.gaps = append(ag.gaps, gap{lo: ag.max + 1, hi: seq - 1, at: m.Offset, subject: string(a.subject)})
		ag.max = seq
	default:
		if at, ok := ag.fill(seq); ok {
			if c.full(KindSwap) {
				return
			}
			c.add(Finding{Kind: KindSwap, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ),
				Sequence: seq, Also: []Location{{Partition: c.r.part, Offset: at}},
				Detail: fmt.Sprintf("sequence %d arrives after sequence %d (offset %d already passed it): out of order in the log", seq, ag.max, at)})
			return
		}
		if c.full(KindStale) {
			return
		}
		f := Finding{Kind: KindStale, Offset: m.Offset, Subject: string(a.subject), ID: string(a.id), Type: string(a.typ), Sequence: seq,
			Detail: fmt.Sprintf("sequence %d was already taken by another event id (the aggregate is at %d): a second writer, or a write retried under a new id", seq, ag.max)}
		for _, s := range ag.seen {
			if s.seq == seq && s.offset != m.Offset {
				f.Also = append(f.Also, Location{Partition: c.r.part, Offset: s.offset})
			}
		}
		c.add(f)
	}
}

// fill removes seq from the aggregate's gaps and returns the offset of the record
// that skipped it, if it was in one.
func (ag *aggregate) fill(seq uint64) (int64, bool) {
	for i, g := range ag.gaps {
		if seq < g.lo || seq > g.hi {
			continue
		}
		switch {
		case g.lo == g.hi:
			ag.gaps = slices.Delete(ag.gaps, i, i+1)
		case seq == g.lo:
			ag.gaps[i].lo++
		case seq == g.hi:
			ag.gaps[i].hi--
		default:
			ag.gaps[i].hi = seq - 1
			ag.gaps = slices.Insert(ag.gaps, i+1, gap{lo: seq + 1, hi: g.hi, at: g.at, subject: g.subject})
		}
		return g.at, true
	}
	return 0, false
}

// finish reports the gaps never filled.
func (c *checker) finish() {
	for _, ag := range c.aggs {
		for _, g := range ag.gaps {
			what := fmt.Sprintf("sequence %d is missing", g.lo)
			if g.hi > g.lo {
				what = fmt.Sprintf("sequences %d to %d are missing", g.lo, g.hi)
			}
			c.add(Finding{Kind: KindGap, Offset: g.at, Subject: g.subject, Sequence: g.hi + 1, Missing: []uint64{g.lo, g.hi},
				Detail: fmt.Sprintf("%s (never seen in the range scanned): the record at offset %d jumps to sequence %d", what, g.at, g.hi+1)})
		}
		ag.gaps = nil
	}
}

// merge gathers the checkers' findings into the report, at most MaxFindings per
// kind, and returns the listed duplicates whose other offsets are unknown (index
// into rep.Findings to id hash).
func (s *scan) merge(rep *Report, checkers []*checker) map[int]uint64 {
	listed := map[Kind]int{}
	unlocated := map[int]uint64{}
	for _, c := range checkers {
		for k, n := range c.count {
			rep.Counts[k] += n
		}
		for i, f := range c.found {
			if listed[f.Kind] >= s.cfg.MaxFindings {
				continue
			}
			listed[f.Kind]++
			rep.Findings = append(rep.Findings, f)
			if h, ok := c.unlocated[i]; ok {
				unlocated[len(rep.Findings)-1] = h
			}
		}
	}
	for k, n := range rep.Counts {
		if extra := n - int64(listed[k]); extra > 0 {
			if rep.Unlisted == nil {
				rep.Unlisted = map[Kind]int64{}
			}
			rep.Unlisted[k] = extra
		}
	}
	return unlocated
}

// maxLocations bounds the offsets listed for one duplicated id.
const maxLocations = 16

// locate reads the range again to find every offset of the duplicated ids the
// first pass could not place, and lists the others in each one's finding.
func (s *scan) locate(ctx context.Context, rep *Report, unlocated map[int]uint64) error {
	want := map[uint64]bool{}
	for _, h := range unlocated {
		want[h] = true
	}
	found := make([]map[uint64][]Location, len(s.ranges)) // per range: no lock while reading
	for i := range found {
		found[i] = map[uint64][]Location{}
	}
	err := s.pass(ctx, 2, func(i int, m *kafka.Message) {
		var a attrs
		a.readHeaders(m.Headers)
		id := a.id
		if a.structured() {
			e, err := eventlog.FromMessage(*m)
			if err != nil {
				return
			}
			id = []byte(e.ID)
		}
		h := maphash.Bytes(s.seed, id)
		if locs := found[i][h]; want[h] && len(locs) < maxLocations {
			found[i][h] = append(locs, Location{Partition: s.ranges[i].part, Offset: m.Offset})
		}
	})
	if err != nil {
		return err
	}
	for i, h := range unlocated {
		f := &rep.Findings[i]
		for _, byRange := range found {
			for _, l := range byRange[h] {
				if (l != Location{Partition: f.Partition, Offset: f.Offset}) && len(f.Also) < maxLocations {
					f.Also = append(f.Also, l)
				}
			}
		}
		slices.SortFunc(f.Also, func(x, y Location) int {
			return cmp.Or(cmp.Compare(x.Partition, y.Partition), cmp.Compare(x.Offset, y.Offset))
		})
	}
	return nil
}
