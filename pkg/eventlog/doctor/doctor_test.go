package doctor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/eventlog/doctor"
	"github.com/projector/projector/pkg/events"
)

// generate returns n events of the example domain (no personal data sealed: the
// check of plaintext is left out with a nil registry unless a test asks for it).
func generate(t *testing.T, n int, prefix string) []events.Event {
	t.Helper()
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 7, Users: 50, Prefix: prefix})
	require.NoError(t, err)
	out := make([]events.Event, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

func publish(t *testing.T, topic string, evs ...events.Event) []eventlog.Result {
	t.Helper()
	p, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: topic})
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()
	res, err := p.Publish(context.Background(), evs...)
	require.NoError(t, err)
	return res
}

// writeAt writes messages each to the partition its Partition field names.
func writeAt(t *testing.T, topic string, msgs ...kafka.Message) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(testenv.Kafka(t)...), Topic: topic, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: tr,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int {
			p, _ := strconv.Atoi(m.WriterData.(string))
			return p
		})}
	for i := range msgs {
		msgs[i].WriterData = strconv.Itoa(msgs[i].Partition)
		msgs[i].Partition = 0
	}
	require.NoError(t, w.WriteMessages(context.Background(), msgs...))
	require.NoError(t, w.Close())
}

func scan(t *testing.T, cfg doctor.Config) *doctor.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.Brokers = testenv.Kafka(t)
	rep, err := doctor.Scan(ctx, cfg)
	require.NoError(t, err)
	return rep
}

func table(t *testing.T, rep *doctor.Report) string {
	var b bytes.Buffer
	require.NoError(t, rep.WriteTable(&b, 0))
	return b.String()
}

// Not parallel, for goleak: the scan's connections and goroutines are gone when it
// returns.
func TestScanFindsNothingInAHealthyLogThenEachPlantedProblem(t *testing.T) {
	topic := testenv.Topic(t, 3)
	evs := generate(t, 600, "u")
	res := publish(t, topic, evs...)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	var ticks int
	rep := scan(t, doctor.Config{Topic: topic, Progress: func(doctor.Progress) { ticks++ }})
	require.True(t, rep.OK(), table(t, rep))
	require.Equal(t, int64(600), rep.Records)
	require.True(t, rep.FullHistory)
	require.Equal(t, 1, rep.Passes)
	require.Positive(t, ticks)

	// Plant one of each problem.
	victim := evs[10]
	wrong := (res[10].Partition + 1) % 3
	misrouted, err := eventlog.ToMessage(events.Event{ID: events.NewID(), Source: "kcat", Type: victim.Type,
		Subject: victim.Subject, Data: victim.Data, Sequence: 0})
	require.NoError(t, err)
	misrouted.Partition = wrong
	dup, err := eventlog.ToMessage(evs[20]) // the same event again, late: beyond the window
	require.NoError(t, err)
	dup.Partition = res[20].Partition
	noType, err := eventlog.ToMessage(evs[30])
	require.NoError(t, err)
	noType.Headers = without(noType.Headers, "ce_type")
	noType.Partition = res[30].Partition
	writeAt(t, topic, misrouted, dup, noType)

	rep = scan(t, doctor.Config{Topic: topic})
	require.Equal(t, int64(603), rep.Records)
	require.Equal(t, map[doctor.Kind]int64{doctor.KindMisrouted: 1, doctor.KindDuplicate: 1, doctor.KindMissingAttribute: 1}, rep.Counts, table(t, rep))
	require.Equal(t, 2, rep.Passes, "the duplicate is beyond its aggregate's window: located in a second pass")
	for _, f := range rep.Findings {
		switch f.Kind {
		case doctor.KindMisrouted:
			require.Equal(t, wrong, f.Partition)
			require.Equal(t, res[10].Partition, *f.Expected)
		case doctor.KindDuplicate:
			require.Equal(t, []doctor.Location{{Partition: res[20].Partition, Offset: res[20].Offset}}, f.Also)
			require.Equal(t, evs[20].ID, f.ID)
		case doctor.KindMissingAttribute:
			require.Equal(t, "type", f.Field)
		}
	}
	out := table(t, rep)
	require.Contains(t, out, "3 problems: misrouted 1, missing-attribute 1, duplicate 1")
	b, err := json.Marshal(rep)
	require.NoError(t, err)
	require.Contains(t, string(b), `"expected_partition":`+strconv.Itoa(res[10].Partition))
}

func without(hs []kafka.Header, name string) []kafka.Header {
	var out []kafka.Header
	for _, h := range hs {
		if h.Key != name {
			out = append(out, h)
		}
	}
	return out
}

func TestScanRanges(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 2)
	base := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	var msgs []kafka.Message
	home := map[int]string{} // a subject per partition that hashes there
	for i := 0; len(home) < 2; i++ {
		s := fmt.Sprintf("agg-%d", i)
		if p := eventlog.Murmur2Partition([]byte(s), 2); home[p] == "" {
			home[p] = s
		}
	}
	for p := range 2 {
		for i := range 10 {
			// Keyless records with sequences: ten per partition, an hour apart.
			e := events.Event{ID: fmt.Sprintf("p%d-%d", p, i), Source: "s", Type: "T", Subject: home[p],
				Sequence: uint64(i + 1), Data: json.RawMessage(`{}`)}
			m, err := eventlog.ToMessage(e)
			require.NoError(t, err)
			m.Key, m.Partition, m.Time = nil, p, base.Add(time.Duration(i)*time.Hour)
			msgs = append(msgs, m)
		}
	}
	writeAt(t, topic, msgs...)

	rep := scan(t, doctor.Config{Topic: topic})
	require.True(t, rep.OK(), table(t, rep))
	require.Equal(t, int64(20), rep.Records)

	from, err := doctor.ParseOffsets("4,1:8")
	require.NoError(t, err)
	to, err := doctor.ParseOffsets("0:6")
	require.NoError(t, err)
	rep = scan(t, doctor.Config{Topic: topic, From: from, To: to})
	require.Equal(t, []doctor.Range{{Partition: 0, From: 4, To: 6, Records: 2}, {Partition: 1, From: 8, To: 10, Records: 2}}, rep.Ranges)
	require.False(t, rep.FullHistory)
	require.True(t, rep.OK(), "mid-log, an aggregate's first sequence is its baseline: %s", table(t, rep))

	rep = scan(t, doctor.Config{Topic: topic, Partitions: []int{1}, Since: base.Add(2 * time.Hour), Until: base.Add(5 * time.Hour)})
	require.Equal(t, []doctor.Range{{Partition: 1, From: 2, To: 5, Records: 3}}, rep.Ranges)

	ctx := context.Background()
	for _, c := range []struct {
		cfg  doctor.Config
		want string
	}{
		{doctor.Config{Topic: topic, Partitions: []int{2}}, "partition 2 does not exist: the topic has 2"},
		{doctor.Config{Topic: topic, From: doctor.Offsets{All: 11, HasAll: true}}, "--from 11 is past the log end 10"},
		{doctor.Config{Topic: topic, From: from, Partitions: []int{0}}, "--from names partition 1, which is not scanned"},
		{doctor.Config{Topic: topic, To: doctor.Offsets{Of: map[int]int64{0: 2}}, From: doctor.Offsets{All: 5, HasAll: true}}, "--to 2 is before the start 5"},
		{doctor.Config{Topic: topic, Since: base, From: from}, "give a start by offset or by time"},
		{doctor.Config{Topic: testenv.UniqueName(t)}, "Unknown Topic Or Partition"},
	} {
		c.cfg.Brokers = testenv.Kafka(t)
		_, err := doctor.Scan(ctx, c.cfg)
		require.ErrorContains(t, err, c.want)
	}
}
