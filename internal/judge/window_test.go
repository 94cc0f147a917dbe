package judge

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDedupeWindow(t *testing.T) {
	t.Parallel()
	var a Aggregate
	for s := uint64(1); s <= 5; s++ {
		a = a.with(s, fmt.Sprint("e", s))
	}
	a = a.with(7, "e7")
	require.True(t, a.holds("e1") && a.holds("e7"))
	require.False(t, a.holds("e6") || a.holds(""), "the start marker is no event")
	require.True(t, a.reaches(6), "a swap is reached")
	require.True(t, a.reaches(1), "the whole history is still in the window")
	_, ok := a.holder(3)
	require.True(t, ok)
	h, ok := a.holder(7)
	require.True(t, ok)
	require.Equal(t, "e7", h, "the event at the highest sequence is named")
	_, ok = a.holder(6)
	require.False(t, ok)

	for s := uint64(8); s <= 100; s++ {
		a = a.with(s, fmt.Sprint("e", s))
	}
	require.Len(t, a.Window(), dedupeWindow)
	require.False(t, a.holds("e7"), "evicted")
	require.True(t, a.holds("e69") && a.holds("e100"))
	require.True(t, a.reaches(69))
	require.False(t, a.reaches(68), "below the window: cannot be proven either way")
	require.Equal(t, uint64(100), a.Seq)

	// A stale event applied keeps the aggregate's highest sequence.
	b := a.with(50, "late")
	require.Equal(t, uint64(100), b.Seq)
	require.Equal(t, "e100", b.ID)
	require.True(t, b.holds("late"))

	// The window survives its column, in about 10 bytes an event; a damaged one
	// decodes as far as it is whole.
	raw := EncodeWindow(b.Window())
	require.Equal(t, b.Recent, raw, "held as stored")
	require.Less(t, len(raw), 11*dedupeWindow)
	require.Equal(t, b.Window()[:3], DecodeWindow(raw[:len(raw)*3/len(b.Window())+1])[:3])
	require.Empty(t, DecodeWindow([]byte{0xff}))

	// A mark from before windows existed reaches nothing below what it sees.
	old := Aggregate{Seq: 58, ID: "x"}
	require.False(t, old.reaches(3))
	old = old.with(59, "y")
	require.False(t, old.reaches(3))
	require.True(t, old.reaches(59))
}

// A window is encoded into exactly the bytes it takes, whatever its sequences'
// sizes, and decodes whole.
func TestWindowEncodesIntoExactlyItsBytes(t *testing.T) {
	t.Parallel()
	w := []Applied{start, {Seq: 1, Hash: 7}, {Seq: 127, Hash: 8}, {Seq: 128, Hash: 9}, {Seq: 1 << 40, Hash: 10}, {Seq: 1<<64 - 1, Hash: 11}}
	raw := EncodeWindow(w)
	require.Equal(t, len(raw), cap(raw))
	require.Equal(t, (1+1+1+2+6+10)+8*len(w), len(raw))
	require.Equal(t, w, DecodeWindow(raw))
	require.Nil(t, DecodeWindow(nil))
}

// A window whose tail is damaged is judged and extended by its whole entries: the
// damage is dropped with the next event, never carried into what is written back.
func TestAWindowWithADamagedTailIsExtendedByItsWholeEntries(t *testing.T) {
	t.Parallel()
	var a Aggregate
	for s := uint64(1); s <= 3; s++ {
		a = a.with(s, fmt.Sprint("e", s))
	}
	whole := a.Window()
	a.Recent = append(a.Recent, 0x05, 0x01) // half an entry
	require.True(t, a.holds("e2"))
	require.False(t, a.holds("e9"))
	b := a.with(4, "e4")
	require.Equal(t, append(whole, Applied{Seq: 4, Hash: idHash("e4")}), b.Window())
	require.Equal(t, EncodeWindow(b.Window()), b.Recent, "no damaged byte is kept")
}
