package doctor

import (
	"math/bits"
	"sync/atomic"
)

// idSet is a set of 64-bit id hashes shared by the partitions' goroutines: open
// addressing with linear probing, lock-free (a slot is claimed by compare-and-swap).
// Its size is fixed when it is made, for at most n ids at a load of at most 3/4;
// adding more ids than that is a programming error (the scan sizes it for every
// offset in range, which bounds the records).
type idSet struct {
	slots []atomic.Uint64
	mask  uint64
}

// newIDSet returns a set for up to n ids.
func newIDSet(n int64) *idSet {
	want := uint64(max(n, 1)) * 4 / 3
	size := uint64(1) << max(10, bits.Len64(want))
	return &idSet{slots: make([]atomic.Uint64, size), mask: size - 1}
}

// bytes is the set's memory.
func (s *idSet) bytes() int64 { return int64(len(s.slots)) * 8 }

// add puts h in the set and reports whether it was there already.
func (s *idSet) add(h uint64) bool {
	if h == 0 {
		h = 1 // 0 marks an empty slot
	}
	for i := h & s.mask; ; i = (i + 1) & s.mask {
		switch v := s.slots[i].Load(); v {
		case h:
			return true
		case 0:
			if s.slots[i].CompareAndSwap(0, h) {
				return false
			}
			if s.slots[i].Load() == h {
				return true
			}
		}
	}
}
