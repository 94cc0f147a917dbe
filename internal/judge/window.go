package judge

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// dedupeWindow is how many of an aggregate's last applied events are remembered,
// as (sequence, id hash): the proof that a late copy of one of them is a duplicate.
// A retried write whose copy lands within this many events of its aggregate is
// recognised and skipped. An event at or below its aggregate's sequence that is not
// a proven duplicate is never dropped: within the window's reach it is applied
// (GapWarn) or parked; beyond it, or claiming a sequence another id holds, it parks,
// without holding its aggregate back, for an operator to retry or skip.
//
// Ids are remembered by their 64-bit xxhash, which keeps the window at about 10
// bytes an event: two different ids of one aggregate, 32 events apart, are taken
// for one with a probability of about 2^-59.
const dedupeWindow = 32

// Applied is one applied event of an aggregate, kept in its window.
type Applied struct {
	Seq  uint64
	Hash uint64 // xxhash of the event id
}

func idHash(id string) uint64 { return xxhash.Sum64String(id) }

// EncodeWindow packs a window for its bytea column: per event, the sequence as a
// uvarint, then the id's hash in 8 bytes, little-endian.
func EncodeWindow(w []Applied) []byte {
	n := 0
	for _, a := range w {
		n += uvarintLen(a.Seq) + 8
	}
	// Sized exactly: the batch holds its windows until it commits, and sized for the
	// longest varint each took twice the bytes.
	b := make([]byte, 0, n)
	for _, a := range w {
		b = binary.AppendUvarint(b, a.Seq)
		b = binary.LittleEndian.AppendUint64(b, a.Hash)
	}
	return b
}

// DecodeWindow unpacks a window. A damaged one decodes as far as it is whole: a
// window cut short only makes more events park, never one be skipped.
func DecodeWindow(b []byte) []Applied {
	if len(b) == 0 {
		return nil
	}
	// At most one entry per 9 bytes (a one-byte sequence and the hash): one
	// allocation, where appending grew the slice five times for a full window.
	w := make([]Applied, 0, len(b)/9)
	for len(b) > 0 {
		seq, n := binary.Uvarint(b)
		if n <= 0 || len(b) < n+8 {
			break
		}
		w = append(w, Applied{Seq: seq, Hash: binary.LittleEndian.Uint64(b[n:])})
		b = b[n+8:]
	}
	return w
}

// Aggregate is an aggregate's mark: its highest applied sequence, the event that
// holds it, and its last applied events.
type Aggregate struct {
	Seq uint64
	ID  string
	// Recent is the window of its last applied events, in the order applied, at most
	// dedupeWindow, encoded as its column stores it (EncodeWindow): a batch reads,
	// judges against, extends and writes it back without decoding it, at a third of
	// the decoded size (the windows of a batch's aggregates are held until it
	// commits). A damaged tail is ignored, as DecodeWindow ignores it.
	Recent []byte
	// Stored: the mark was read from its table. One that was not is new to it, unless
	// another transaction wrote it since the read.
	Stored bool
}

// Window returns the window decoded.
func (a Aggregate) Window() []Applied { return DecodeWindow(a.Recent) }

// start marks the beginning of an aggregate's history in its window: while it is
// there, the window holds every event the aggregate ever applied.
var start = Applied{}

// startEncoded is start as EncodeWindow writes it.
var startEncoded = EncodeWindow([]Applied{start})

// entry reads the window entry at the start of b: the entry and its length, or a
// length of 0 when b holds no whole entry (its end, or damage).
func entry(b []byte) (Applied, int) {
	seq, n := binary.Uvarint(b)
	if n <= 0 || len(b) < n+8 {
		return Applied{}, 0
	}
	return Applied{Seq: seq, Hash: binary.LittleEndian.Uint64(b[n:])}, n + 8
}

// each calls fn with each whole entry of the window w, in order, until fn returns
// false; it returns the length of the whole entries it read.
func each(w []byte, fn func(Applied) bool) int {
	off := 0
	for off < len(w) {
		e, n := entry(w[off:])
		if n == 0 {
			break
		}
		off += n
		if !fn(e) {
			break
		}
	}
	return off
}

// with returns the mark after an event with seq and id was applied.
func (a Aggregate) with(seq uint64, id string) Aggregate {
	var count int
	old := a.Recent[:each(a.Recent, func(Applied) bool { count++; return true })] // whole entries only
	if a.Seq == 0 && count == 0 {
		old, count = startEncoded, 1 // the aggregate's first event
	}
	for drop := count + 1 - dedupeWindow; drop > 0; drop-- {
		_, n := entry(old)
		old = old[n:]
	}
	recent := make([]byte, 0, len(old)+uvarintLen(seq)+8)
	recent = append(recent, old...)
	recent = binary.AppendUvarint(recent, seq)
	recent = binary.LittleEndian.AppendUint64(recent, idHash(id))
	if seq > a.Seq {
		a.Seq, a.ID = seq, id
	}
	a.Recent = recent
	return a
}

// uvarintLen is how many bytes binary.AppendUvarint takes for v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// holds reports whether id is among the aggregate's recently applied events.
func (a Aggregate) holds(id string) bool {
	if id == a.ID {
		return true
	}
	h, found := idHash(id), false
	each(a.Recent, func(r Applied) bool {
		found = r.Hash == h && r != start
		return !found
	})
	return found
}

// holder reports whether the window remembers an event applied with seq, and its
// id when it is the one holding the aggregate's highest sequence.
func (a Aggregate) holder(seq uint64) (string, bool) {
	if seq == a.Seq && a.ID != "" {
		return a.ID, true
	}
	found := false
	each(a.Recent, func(r Applied) bool {
		found = r.Seq == seq && r != start
		return !found
	})
	return "", found
}

// reaches reports whether the window remembers every applied event at seq or
// above, so that an event at seq whose id it does not hold was never applied: when
// it still holds the start of the aggregate's history, or seq is at or above the
// lowest sequence it holds (an aggregate's sequences are applied mostly in order, so
// an event evicted from the window had a lower one).
func (a Aggregate) reaches(seq uint64) bool {
	lowest, any, fromStart := uint64(0), false, false
	each(a.Recent, func(r Applied) bool {
		if r == start {
			fromStart = true
			return false
		}
		if !any || r.Seq < lowest {
			lowest, any = r.Seq, true
		}
		return true
	})
	return fromStart || (any && seq >= lowest)
}
