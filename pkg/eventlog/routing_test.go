package eventlog

import (
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// Kafka's own test vectors for Utils.murmur2 (UtilsTest.testMurmur2).
func TestMurmur2MatchesKafka(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		require.Equal(t, want, int32(murmur2([]byte(in))), in)
	}
}

func TestMurmur2PartitionMatchesKafkaGo(t *testing.T) {
	t.Parallel()
	var b kafka.Murmur2Balancer
	for n := 1; n <= 13; n++ {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := 0; i < 500; i++ {
			key := []byte(fmt.Sprintf("user-%d", i))
			require.Equal(t, b.Balance(kafka.Message{Key: key}, parts...), Murmur2Partition(key, n))
		}
	}
}

func TestLayoutCheck(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A key that hashes differently under 3 and 6 partitions.
	var key []byte
	for i := 0; ; i++ {
		k := []byte(fmt.Sprintf("k%d", i))
		if Murmur2Partition(k, 3) != Murmur2Partition(k, 6) {
			key = k
			break
		}
	}
	old, now := Murmur2Partition(key, 3), Murmur2Partition(key, 6)
	other := (now + 1) % 6
	for other == old {
		other = (other + 1) % 6
	}
	// Grown from 3 to 6 partitions at t0+10h: partitions 3..5 start then.
	grown := NewLayout([]time.Time{t0, t0, t0, t0.Add(10 * time.Hour), t0.Add(11 * time.Hour), t0.Add(12 * time.Hour)})
	created := NewLayout([]time.Time{t0, t0, t0, t0, t0, t0})
	for _, c := range []struct {
		name   string
		l      Layout
		part   int
		key    []byte
		at     time.Time
		wantOK bool
	}{
		{"routed under today's count", created, now, key, t0.Add(time.Hour), true},
		{"no key", created, other, nil, t0.Add(time.Hour), true},
		{"on another partition", created, other, key, t0.Add(time.Hour), false},
		{"old count, written before the growth", grown, old, key, t0.Add(5 * time.Hour), true},
		{"old count, written after the growth", grown, old, key, t0.Add(20 * time.Hour), false},
		{"on another partition before the growth", grown, other, key, t0.Add(5 * time.Hour), other < 3 && Murmur2Partition(key, other+1) == other},
	} {
		m, ok := c.l.Check(c.part, c.key, c.at)
		require.Equal(t, c.wantOK, ok, c.name)
		if !ok {
			require.Equal(t, now, m.Expected, c.name)
			require.Contains(t, m.Error(), "partitioner=murmur2_random", c.name)
		}
	}
}
