package eventlog

import (
	"fmt"
	"time"
)

// Murmur2Partition returns the partition the Java client's default partitioner (and
// kafka-go's Murmur2Balancer, and librdkafka's murmur2_random) gives a non-empty key
// among n partitions: murmur2(key) with the sign bit cleared, mod n.
func Murmur2Partition(key []byte, n int) int {
	if n <= 0 {
		return 0
	}
	return int(murmur2(key)&0x7fffffff) % n
}

// murmur2 is Kafka's Utils.murmur2 (seed 0x9747b28c).
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		j := i * 4
		k := uint32(data[j]) | uint32(data[j+1])<<8 | uint32(data[j+2])<<16 | uint32(data[j+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	rest := data[n*4:]
	switch len(rest) {
	case 3:
		h ^= uint32(rest[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(rest[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(rest[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// FixPartitioner names the producer settings that honour the partitioning contract,
// for a reason or a report to quote.
const FixPartitioner = "key = subject, murmur2 partitioner: librdkafka (kcat, confluent-kafka-*, node-rdkafka) partitioner=murmur2_random; " +
	"Java clients: the default; franz-go: its default partitioner (murmur2 on keys; also kgo.StickyKeyPartitioner(nil)); kafka-go: &kafka.Murmur2Balancer{}"

// Layout is what a reader knows of a topic's partitioning history: its partition
// count now and, for each partition, the time of its first record (zero when the
// partition is empty). Kafka keeps no record of when partitions were added, but the
// log itself does: a partition added later received its first record no earlier
// than it was added. So before the first record of partitions n..N-1, the topic may
// have had n partitions, and a record older than that may be routed under n.
//
// A topic created with all its partitions has first records close to its own start,
// so almost every record is checked against the current count alone. An empty
// partition weakens the check for the partitions below it (the count could still be
// smaller), never the other way round: the check can miss a misrouted record in a
// sparse topic, but never reports a correctly routed one.
type Layout struct {
	Partitions int
	// FirstRecord holds each partition's first record time; zero = no record yet.
	FirstRecord []time.Time
	// since[n] = the earliest time at which the topic is known to have had more than
	// n partitions: the first record of any partition >= n. Zero = never.
	since []time.Time
}

// NewLayout builds a Layout from each partition's first record time (zero for an
// empty partition).
func NewLayout(first []time.Time) Layout {
	l := Layout{Partitions: len(first), FirstRecord: first, since: make([]time.Time, len(first))}
	var min time.Time
	for n := len(first) - 1; n >= 1; n-- {
		if t := first[n]; !t.IsZero() && (min.IsZero() || t.Before(min)) {
			min = t
		}
		l.since[n] = min
	}
	return l
}

// Misroute describes a keyed record found on a partition its key does not hash to.
type Misroute struct {
	Partition, Expected, Partitions int
}

func (m Misroute) Error() string {
	return fmt.Sprintf("misrouted: key hashes to partition %d of %d (murmur2), record is on partition %d; fix the producer: %s",
		m.Expected, m.Partitions, m.Partition, FixPartitioner)
}

// Check reports whether a record with key on partition part, written at t, honours
// the partitioning contract. Records without a key are never misrouted. A record
// may also be routed under any smaller partition count n the topic may have had
// when it was written (t before the first record of partitions n and up).
func (l Layout) Check(part int, key []byte, t time.Time) (Misroute, bool) {
	if len(key) == 0 || l.Partitions <= 0 {
		return Misroute{}, true
	}
	want := Murmur2Partition(key, l.Partitions)
	if want == part {
		return Misroute{}, true
	}
	for n := l.Partitions - 1; n > part; n-- {
		s := l.since[n]
		if !s.IsZero() && !t.Before(s) {
			// By t the topic had more than n partitions; so did it for every smaller n.
			break
		}
		if Murmur2Partition(key, n) == part {
			return Misroute{}, true
		}
	}
	return Misroute{Partition: part, Expected: want, Partitions: l.Partitions}, false
}
