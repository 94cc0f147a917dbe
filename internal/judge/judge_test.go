package judge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	var fresh Aggregate
	a := fresh.with(1, "e1").with(2, "e2").with(4, "e4") // 3 never came
	var long Aggregate
	for s := uint64(1); s <= 100; s++ {
		long = long.with(s, fmt.Sprint("e", s))
	}
	for _, c := range []struct {
		name string
		last Aggregate
		seq  uint64
		id   string
		want seqCase
	}{
		{"first event", fresh, 1, "x", seqNext},
		{"next", a, 5, "e5", seqNext},
		{"a copy of the last", a, 4, "e4", seqDuplicate},
		{"a copy of an earlier one", a, 1, "e1", seqDuplicate},
		{"a copy carrying another sequence is still a copy", a, 9, "e2", seqDuplicate},
		{"ahead", a, 7, "e7", seqGap},
		{"the missing one, late", a, 3, "e3", seqStale},
		{"a second writer", a, 2, "other", seqConflict},
		{"within the window", long, 80, "new", seqConflict},
		{"below the window", long, 10, "new", seqBeyond},
		{"a copy below the window", long, 10, "e10", seqBeyond},
		{"a copy within the window", long, 80, "e80", seqDuplicate},
	} {
		require.Equal(t, c.want, classify(c.last, c.seq, c.id), c.name)
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	layout := eventlog.NewLayout([]time.Time{t0, t0, t0})
	home := eventlog.Murmur2Partition([]byte("s"), 3)
	mk := func(seq uint64, id string, part int) *Entry {
		return &Entry{Msg: kafka.Message{Key: []byte("s"), Partition: part, Offset: 7, Time: t0.Add(time.Hour)},
			Event:   events.Event{ID: id, Type: "T", Subject: "s", Sequence: seq},
			Decoded: &events.Decoded{}, Behind: -1}
	}
	st := &Marks{Aggs: map[string]Aggregate{"s": Aggregate{}.with(1, "e1").with(2, "e2").with(4, "e4")}, SeenIDs: map[string]bool{}}
	handles := func(string) bool { return true }
	warn := Rules{Partition: home, Layout: &layout, Handles: handles}
	halt := Rules{Partition: home, Layout: &layout, Handles: handles, HaltOnGap: true}
	elsewhere := warn
	elsewhere.Partition = (home + 1) % 3

	v := warn.Judge(mk(3, "e3", home), st, nil, nil)
	require.Equal(t, Verdict{Act: Apply, Stale: true, Behind: -1}, v, "a swap applies under warn")
	v = halt.Judge(mk(3, "e3", home), st, nil, nil)
	require.True(t, v.Act == Park && v.Alone && strings.HasPrefix(v.Reason, "out of order:"), "%+v", v)
	v = halt.Judge(mk(7, "e7", home), st, nil, nil)
	require.True(t, v.Act == Park && !v.Alone && v.Gap, "%+v", v)
	require.Equal(t, Duplicate, warn.Judge(mk(2, "e2", home), st, nil, nil).Act)

	v = elsewhere.Judge(mk(5, "e5", elsewhere.Partition), st, nil, nil)
	require.Equal(t, Park, v.Act)
	require.Contains(t, v.Reason, fmt.Sprintf("key hashes to partition %d of 3", home))
	retry := elsewhere
	retry.Retry = true
	require.Equal(t, Apply, retry.Judge(mk(5, "e5", elsewhere.Partition), st, nil, nil).Act, "an operator's retry applies it")

	v = warn.Judge(mk(5, "e5", home), st, map[string]int64{"s": 3}, nil)
	require.Equal(t, Verdict{Act: Park, Reason: "behind parked event at offset 3", Behind: 3}, v)

	unhandled := warn
	unhandled.Handles = func(string) bool { return false }
	require.Equal(t, Ignore, unhandled.Judge(mk(5, "e5", home), st, nil, nil).Act)
}
