package effects

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFeedKeepsTheFoldsSpansForLanesBehindThem(t *testing.T) {
	f := NewFeed(100)
	f.Claimed(0)
	day := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Passed(Span{From: 0, Next: 10, Newest: day, Types: map[string]int{"a": 10}})
	f.Passed(Span{From: 10, Next: 25, Newest: day.Add(time.Hour), Types: map[string]int{"a": 5, "b": 10}})
	f.Passed(Span{From: 40, Next: 50, Newest: day}) // a batch read from the log between: 25–40
	require.EqualValues(t, 50, f.position(), "a span moves the read model's position")

	s, ok, _ := f.spanAt(12)
	require.True(t, ok)
	require.EqualValues(t, 10, s.From, "a lane inside a span finds it (and reads it to its end)")
	_, ok, next := f.spanAt(30)
	require.False(t, ok)
	require.EqualValues(t, 40, next, "a lane between spans reads up to the next one")
	s, ok, _ = f.spanAt(40)
	require.True(t, ok)
	require.EqualValues(t, 50, s.Next)
	_, ok, next = f.spanAt(12)
	require.False(t, ok, "spans below a position asked for are let go")
	require.EqualValues(t, 40, next)

	f.Claimed(50)
	_, ok, next = f.spanAt(40)
	require.False(t, ok, "a new claim forgets the spans")
	require.Zero(t, next)
}

func TestFeedMergesItsOldestSpansBeyondItsBound(t *testing.T) {
	f := NewFeed(100)
	f.Claimed(0)
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxSpans + 2 {
		f.Passed(Span{From: int64(i * 10), Next: int64(i*10 + 10), Events: 10, Newest: base.Add(time.Duration(i) * time.Minute), Types: map[string]int{"a": 10}})
	}
	require.Len(t, f.spans, maxSpans)
	s, ok, _ := f.spanAt(0)
	require.True(t, ok)
	require.EqualValues(t, 10, s.Next, "the oldest span, where the dispatcher may stand, is kept whole")
	s, ok, _ = f.spanAt(10)
	require.True(t, ok)
	require.EqualValues(t, 10, s.From)
	require.EqualValues(t, 40, s.Next, "the next three spans merged into one")
	require.Equal(t, base.Add(3*time.Minute), s.Newest, "a merged span's newest event is the latest of theirs")
	require.Equal(t, 30, s.Types["a"])
	require.EqualValues(t, 30, s.Events)

	// A merge never takes in an unknown time: the merged span is not passed unread.
	g := NewFeed(100)
	g.Claimed(0)
	g.Passed(Span{From: 0, Next: 10, Newest: base})
	g.Passed(Span{From: 10, Next: 20, Types: map[string]int{"a": 1}})
	for i := 2; i <= maxSpans; i++ {
		g.Passed(Span{From: int64(i * 10), Next: int64(i*10 + 10), Newest: base})
	}
	s, ok, _ = g.spanAt(10)
	require.True(t, ok)
	require.True(t, s.Newest.IsZero())
}
