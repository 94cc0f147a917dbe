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
	Seq    uint64
	ID     string
	Recent []Applied // in the order applied, at most dedupeWindow
}

// start marks the beginning of an aggregate's history in its window: while it is
// there, the window holds every event the aggregate ever applied.
var start = Applied{}

// with returns the mark after an event with seq and id was applied.
func (a Aggregate) with(seq uint64, id string) Aggregate {
	old := a.Recent
	if a.Seq == 0 && len(old) == 0 {
		old = []Applied{start} // the aggregate's first event
	}
	recent := make([]Applied, 0, min(len(old)+1, dedupeWindow))
	if n := len(old) + 1 - dedupeWindow; n > 0 {
		recent = append(recent, old[n:]...)
	} else {
		recent = append(recent, old...)
	}
	recent = append(recent, Applied{Seq: seq, Hash: idHash(id)})
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
	h := idHash(id)
	for i := len(a.Recent) - 1; i >= 0; i-- {
		if a.Recent[i].Hash == h && a.Recent[i] != start {
			return true
		}
	}
	return false
}

// holder reports whether the window remembers an event applied with seq, and its
// id when it is the one holding the aggregate's highest sequence.
func (a Aggregate) holder(seq uint64) (string, bool) {
	if seq == a.Seq && a.ID != "" {
		return a.ID, true
	}
	for _, r := range a.Recent {
		if r.Seq == seq && r != start {
			return "", true
		}
	}
	return "", false
}

// reaches reports whether the window remembers every applied event at seq or
// above, so that an event at seq whose id it does not hold was never applied: when
// it still holds the start of the aggregate's history, or seq is at or above the
// lowest sequence it holds (an aggregate's sequences are applied mostly in order, so
// an event evicted from the window had a lower one).
func (a Aggregate) reaches(seq uint64) bool {
	lowest, any := uint64(0), false
	for _, r := range a.Recent {
		if r == start {
			return true
		}
		if !any || r.Seq < lowest {
			lowest, any = r.Seq, true
		}
	}
	return any && seq >= lowest
}
