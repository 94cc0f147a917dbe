package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/eventlog/doctor"
	"github.com/projector/projector/pkg/events"
)

func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

func TestCheckAndTopicUsageErrorsExit2NamingTheProblem(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"check", "a", "b"}, "check takes one argument, the topic; got 2"},
		{[]string{"check", "t", "--from", "x"}, `--from: offset "x" is not a non-negative integer`},
		{[]string{"check", "t", "--to", "1:2,1:3"}, "--to: \"1:2,1:3\": partition 1 given twice"},
		{[]string{"check", "t", "--partition", "0,z"}, `--partition "0,z": "z" is not a partition number`},
		{[]string{"check", "t", "--since", "last tuesday"}, `--since: "last tuesday": want RFC 3339`},
		{[]string{"check", "t", "--since", "2026-01-02", "--until", "2026-01-01"}, "is not before --until"},
		{[]string{"check", "t", "--from", "5", "--since", "1h"}, "--from and --since both set"},
		{[]string{"check", "t", "--window", "0"}, "--window 0: must be at least 1"},
		{[]string{"check", "t", "--limit", "-1"}, "--limit -1"},
		{[]string{"check", "t", "--brokers", " , "}, "--brokers (KAFKA_BROKERS) is empty"},
		{[]string{"check", "t", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"topic"}, "topic needs a subcommand"},
		{[]string{"topic", "drop", "t"}, `unknown topic subcommand "drop"`},
		{[]string{"topic", "create", "a", "b"}, "topic create takes one argument"},
		{[]string{"topic", "create", "t", "--partitions", "-3"}, "--partitions -3"},
		{[]string{"topic", "create", "t", "--replication-factor", "0"}, "--replication-factor 0"},
	} {
		out, err := runCmd(t, "", c.args...)
		require.Equal(t, exitUsage, exitCode(err), "%v: %v\n%s", c.args, err, out)
		require.ErrorContains(t, err, c.want, c.args)
	}
}

func TestProgressBar(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	bar := &progressBar{out: &b}
	bar.show(doctor.Progress{Pass: 1, Records: 250, Total: 1000, Elapsed: time.Second})
	require.Equal(t, "\rscanning [#######.......................]  25% 250/1000  250/s  ETA 3s\x1b[K", b.String())
	b.Reset()
	bar.show(doctor.Progress{Pass: 2, Records: 1000, Total: 1000, Elapsed: 3 * time.Second})
	require.Equal(t, "\rlocating duplicates [##############################] 100% 1000/1000\x1b[K", b.String())
	b.Reset()
	bar.clear()
	require.Equal(t, "\r\x1b[K", b.String())
}

func TestParseWhen(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-26T10:00:00Z":      time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC),
		"2026-11-26T10:00:00+01:00": time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC),
		"2026-11-20":                time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC),
		"90m":                       now.Add(-90 * time.Minute),
		"7d":                        now.Add(-7 * 24 * time.Hour),
		"":                          {},
	} {
		got, err := parseWhen(in, now)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: %v, want %v", in, got, want)
	}
	for _, bad := range []string{"-1h", "0s", "xd", "yesterday"} {
		_, err := parseWhen(bad, now)
		require.Error(t, err, bad)
	}
}

func TestCheckExitStatus(t *testing.T) {
	t.Parallel()
	topic := historyTopic(t, 3)
	testenv.MasterKey(t)
	out, err := runCmd(t, "", "generate", brokersFlag(t), "--topic", topic, "--events", "2000", "--users", "40", "--prefix", "u"+testenv.UniqueName(t))
	require.NoError(t, err, out)

	out, err = runCmd(t, "", "check", topic, brokersFlag(t))
	require.NoError(t, err, out)
	require.Contains(t, out, "2000 records scanned")
	require.Contains(t, out, "no problem found")

	// A record in plain text, written as another service might.
	_, err = runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--master-key=", "--plaintext-personal-data", "--type", domain.TypeUserRegistered,
		"--subject", "someone", "--sequence", "1", "--data", `{"user_id":"someone","email":"s@example.test","name":"S"}`)
	require.NoError(t, err)
	_, err = runCmd(t, "", "check", topic, brokersFlag(t))
	require.Equal(t, exitProblems, exitCode(err), "%v", err)
	out, err = runCmd(t, "", "check", brokersFlag(t), "--topic", topic, "--json")
	require.Equal(t, exitProblems, exitCode(err))
	var rep doctor.Report
	require.NoError(t, json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &rep), out)
	require.Equal(t, map[doctor.Kind]int64{doctor.KindPlaintextPersonal: 1}, rep.Counts)
	require.Equal(t, "email,name", rep.Findings[0].Field)

	_, err = runCmd(t, "", "check", testenv.UniqueName(t), brokersFlag(t))
	require.Equal(t, exitScanFailed, exitCode(err), "%v", err)
	require.ErrorContains(t, err, "Unknown Topic Or Partition")
}

func TestTopicCreateAndDescribe(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	name := testenv.UniqueName(t)
	defer deleteTopics(t, name)
	out, err := runCmd(t, "", "topic", "create", name, brokersFlag(t), "--partitions", "5")
	require.NoError(t, err, out)
	require.Contains(t, out, "topic "+name+" created: 5 partitions, every leader serving")
	require.Contains(t, out, "keeps its full history")
	require.Regexp(t, `retention\.ms\s+-1\s+topic`, out)

	// The first write to the new topic needs no retry.
	res, err := runCmd(t, "", "send", brokersFlag(t), "--topic", name, "--type", "Ping", "--subject", "s-1", "--data", `{}`)
	require.NoError(t, err, res)

	out, err = runCmd(t, "", "topic", "create", name, brokersFlag(t))
	require.NoError(t, err, out)
	require.Contains(t, out, "exists, unchanged: 5 partitions")
	_, err = runCmd(t, "", "topic", "create", name, brokersFlag(t), "--partitions", "8")
	require.ErrorContains(t, err, "exists with 5 partitions, not 8")

	out, err = runCmd(t, "", "topic", "describe", name, brokersFlag(t), "--json")
	require.NoError(t, err, out)
	var d eventlog.TopicDescription
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	require.True(t, d.KeepsHistory)
	require.Len(t, d.Partitions, 5)
	p := eventlog.Murmur2Partition([]byte("s-1"), 5)
	require.Equal(t, int64(1), d.Partitions[p].End)
	require.False(t, d.Partitions[p].FirstRecord.IsZero())

	// A topic made elsewhere with a week's retention: described, flagged, refused.
	risky := testenv.UniqueName(t)
	defer deleteTopics(t, risky)
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: testenv.Transport(t)}
	resp, err := c.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: risky, NumPartitions: 2, ReplicationFactor: 1}}})
	require.NoError(t, err)
	require.NoError(t, resp.Errors[risky])
	// Made without EnsureTopic, which waits for this: a topic's metadata names its
	// leaders a moment before they serve it (Not Leader For Partition).
	testenv.WaitFor(t, 30*time.Second, "the new topic's leaders to serve it", func() bool {
		_, err := eventlog.ReadLayout(context.Background(), brokers, risky)
		return err == nil
	})
	out, err = runCmd(t, "", "topic", "describe", risky, brokersFlag(t))
	require.ErrorIs(t, err, eventlog.ErrHistoryAtRisk)
	require.Contains(t, out, "DOES NOT keep its history: retention.ms=604800000 (want -1)")
	require.Contains(t, out, "--add-config retention.ms=-1,retention.bytes=-1,cleanup.policy=delete")
	_, err = runCmd(t, "", "topic", "create", risky, brokersFlag(t))
	require.ErrorIs(t, err, eventlog.ErrHistoryAtRisk)
}

// historyTopic creates a topic with the full-history settings the producer needs,
// deleted when the test ends.
func historyTopic(t *testing.T, partitions int) string {
	t.Helper()
	name := testenv.UniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := eventlog.EnsureTopic(ctx, testenv.Kafka(t), eventlog.TopicConfig{Name: name, Partitions: partitions})
	require.NoError(t, err)
	t.Cleanup(func() { deleteTopics(t, name) })
	return name
}

func deleteTopics(t *testing.T, names ...string) {
	c := eventlog.NewClient(testenv.Kafka(t))
	defer c.Close()
	_, _ = c.Kafka().DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: names})
}

// kcat runs kcat (Debian's package; scripts/stack.sh installs it) with stdin.
func kcat(t *testing.T, stdin string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv(testenv.EnvRequireStack) == "1" {
			t.Fatal("kcat is not installed (scripts/stack.sh up installs it)")
		}
		t.Skip("kcat is not installed (scripts/stack.sh up installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-b", strings.Join(testenv.Kafka(t), ",")}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kcat %v: %s", args, out)
}

// goHistory publishes the example domain's events through the producer and returns
// each aggregate's last sequence.
func goHistory(t *testing.T, topic, prefix string) map[string]uint64 {
	t.Helper()
	testenv.MasterKey(t)
	out, err := runCmd(t, "", "generate", brokersFlag(t), "--topic", topic, "--events", "1500", "--users", "60", "--prefix", prefix)
	require.NoError(t, err, out)
	last := map[string]uint64{}
	for _, m := range testenv.ReadAll(t, topic) {
		e, err := eventlog.FromMessage(m)
		require.NoError(t, err)
		last[e.Subject] = max(last[e.Subject], e.Sequence)
	}
	return last
}

// kcatEvents writes, through kcat, one more event for each aggregate (its next
// sequence), half in binary mode (ce_* headers, one kcat run each) and half in
// structured mode (one kcat run), and returns the event ids it wrote.
func kcatEvents(t *testing.T, topic string, last map[string]uint64, settings ...string) map[string]string {
	t.Helper()
	subjects := make([]string, 0, len(last))
	for s := range last {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	ids := map[string]string{} // id -> subject
	var structured strings.Builder
	for i, s := range subjects {
		id := fmt.Sprintf("kcat-%s-%d", s, last[s]+1)
		ids[id] = s
		seq := strconv.FormatUint(last[s]+1, 10)
		data := fmt.Sprintf(`{"user_id":%q,"password_hash":"$2a$10$kcat"}`, s)
		if i%2 == 0 {
			args := append([]string{"-P", "-t", topic, "-k", s,
				"-H", "ce_specversion=1.0", "-H", "ce_id=" + id, "-H", "ce_source=billing-py",
				"-H", "ce_type=" + domain.TypeUserChangedPassword, "-H", "ce_subject=" + s,
				"-H", "ce_time=2026-12-01T10:00:00Z", "-H", "ce_sequence=" + seq,
				"-H", "content-type=application/json"}, settings...)
			kcat(t, data, args...)
			continue
		}
		ev, err := json.Marshal(map[string]any{"specversion": "1.0", "id": id, "source": "billing-py",
			"type": domain.TypeUserChangedPassword, "subject": s, "time": "2026-12-01T10:00:00Z",
			"sequence": seq, "datacontenttype": "application/json", "data": json.RawMessage(data)})
		require.NoError(t, err)
		fmt.Fprintf(&structured, "%s\t%s\n", s, ev)
	}
	kcat(t, structured.String(), append([]string{"-P", "-t", topic, "-K", "\t",
		"-H", "content-type=" + events.ContentTypeStructured}, settings...)...)
	return ids
}

// The settings docs/producing.md gives for librdkafka.
var documentedKcat = []string{"-X", "partitioner=murmur2_random", "-X", "enable.idempotence=true", "-X", "acks=all"}

// kcat with the documented settings and the Go producer write the same aggregates:
// the doctor finds nothing.
func TestKcatWithTheDocumentedSettingsHonoursTheContract(t *testing.T) {
	t.Parallel()
	topic := historyTopic(t, 6)
	last := goHistory(t, topic, "k"+testenv.UniqueName(t)[:8])
	ids := kcatEvents(t, topic, last, documentedKcat...)

	out, err := runCmd(t, "", "check", topic, brokersFlag(t), "--json")
	require.NoError(t, err, out)
	var rep doctor.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, int64(1500+len(ids)), rep.Records)
}

// kcat with its default partitioner (consistent_random: CRC32) writes the same
// aggregates: every record it put on another partition than murmur2's is reported
// as misrouted, and no other.
func TestKcatDefaultPartitionerIsReportedMisrouted(t *testing.T) {
	t.Parallel()
	topic := historyTopic(t, 6)
	last := goHistory(t, topic, "d"+testenv.UniqueName(t)[:8])
	ids := kcatEvents(t, topic, last)

	var want []string
	for _, m := range testenv.ReadAll(t, topic) {
		e, err := eventlog.FromMessage(m)
		require.NoError(t, err)
		if _, ok := ids[e.ID]; ok && eventlog.Murmur2Partition(m.Key, 6) != m.Partition {
			want = append(want, e.ID)
		}
	}
	require.NotEmpty(t, want, "CRC32 and murmur2 agree on every key: pick other keys")

	out, err := runCmd(t, "", "check", topic, brokersFlag(t), "--json")
	require.Equal(t, exitProblems, exitCode(err), "%v\n%s", err, out)
	var rep doctor.Report
	require.NoError(t, json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &rep), out)
	var got []string
	for _, f := range rep.Findings {
		if f.Kind == doctor.KindMisrouted {
			got = append(got, f.ID)
			require.Equal(t, eventlog.Murmur2Partition([]byte(f.Subject), 6), *f.Expected)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	require.Equal(t, want, got)
	// On its wrong partition, an aggregate starts at a late sequence: a gap there,
	// as the runtime reading that partition would see it. Nothing else.
	require.Equal(t, int64(len(want)), rep.Counts[doctor.KindGap])
	require.Equal(t, map[doctor.Kind]int64{doctor.KindMisrouted: int64(len(want)), doctor.KindGap: int64(len(want))}, rep.Counts)

	out, _ = runCmd(t, "", "check", topic, brokersFlag(t))
	require.Contains(t, out, "partitioner=murmur2_random")
}

// franz-go's default partitioner hashes keys with murmur2 as the Java client does
// (read in its source: UniformBytesPartitioner with keys and KafkaHasher(murmur2)):
// records it writes with keys are where the contract wants them.
func TestFranzGoDefaultPartitionerHonoursTheContract(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 7)
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Kafka(t)...), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer cl.Close()
	var recs []*kgo.Record
	for i := range 300 {
		e := events.Event{ID: fmt.Sprintf("fg-%d", i), Source: "franz", Type: "Ping", Subject: fmt.Sprintf("agg-%d", i%97),
			Sequence: uint64(i/97 + 1), Data: json.RawMessage(`{}`)}
		rec, err := events.Encode(e)
		require.NoError(t, err)
		r := &kgo.Record{Key: rec.Key, Value: rec.Value}
		for _, h := range rec.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		recs = append(recs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
	spread := map[int32]bool{}
	for _, r := range recs {
		require.Equal(t, eventlog.Murmur2Partition(r.Key, 7), int(r.Partition), string(r.Key))
		spread[r.Partition] = true
	}
	require.Greater(t, len(spread), 3)

	out, err := runCmd(t, "", "check", topic, brokersFlag(t))
	require.NoError(t, err, out)
	require.Contains(t, out, "300 records scanned")
}
