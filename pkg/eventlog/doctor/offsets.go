package doctor

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Offsets are offsets per partition, as given on a command line: one for every
// partition ("120"), some partitions' own ("0:120,3:40"), or both ("120,3:40": 40 for
// partition 3, 120 for the others). The zero value sets none.
type Offsets struct {
	All    int64         // for every partition not in Of, when HasAll
	HasAll bool          //
	Of     map[int]int64 // by partition
}

// ParseOffsets reads offsets in the form Offsets describes. The error names the
// item that is wrong.
func ParseOffsets(s string) (Offsets, error) {
	var o Offsets
	if strings.TrimSpace(s) == "" {
		return o, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		part, off, named := strings.Cut(item, ":")
		if !named {
			n, err := parseOffset(item)
			if err != nil {
				return Offsets{}, err
			}
			if o.HasAll {
				return Offsets{}, fmt.Errorf("%q: two offsets for every partition", s)
			}
			o.All, o.HasAll = n, true
			continue
		}
		p, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || p < 0 {
			return Offsets{}, fmt.Errorf("%q: partition %q is not a partition number", item, part)
		}
		n, err := parseOffset(strings.TrimSpace(off))
		if err != nil {
			return Offsets{}, fmt.Errorf("%q: %w", item, err)
		}
		if o.Of == nil {
			o.Of = map[int]int64{}
		}
		if _, dup := o.Of[p]; dup {
			return Offsets{}, fmt.Errorf("%q: partition %d given twice", s, p)
		}
		o.Of[p] = n
	}
	return o, nil
}

func parseOffset(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("offset %q is not a non-negative integer", s)
	}
	return n, nil
}

// IsZero reports whether no offset is set.
func (o Offsets) IsZero() bool { return !o.HasAll && len(o.Of) == 0 }

// For returns the offset set for partition p, if any.
func (o Offsets) For(p int) (int64, bool) {
	if n, ok := o.Of[p]; ok {
		return n, true
	}
	return o.All, o.HasAll
}

// String writes the offsets back in the form ParseOffsets reads.
func (o Offsets) String() string {
	var items []string
	if o.HasAll {
		items = append(items, strconv.FormatInt(o.All, 10))
	}
	parts := make([]int, 0, len(o.Of))
	for p := range o.Of {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	for _, p := range parts {
		items = append(items, fmt.Sprintf("%d:%d", p, o.Of[p]))
	}
	return strings.Join(items, ",")
}
