package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"
)

// layoutFetchBytes bounds the first fetch of each partition: a record batch larger
// than this still comes back whole (the broker returns at least one batch).
const layoutFetchBytes = 64 << 10

// ReadLayout reads a topic's Layout over a Client it closes before returning; see
// Client.ReadLayout.
func ReadLayout(ctx context.Context, brokers []string, topic string) (Layout, error) {
	if len(brokers) == 0 {
		return Layout{}, errors.New("eventlog: read layout: no brokers")
	}
	return withClient(brokers, func(c *Client) (Layout, error) { return c.ReadLayout(ctx, topic) })
}

// ReadLayout reads a topic's Layout: its partition count now and the Kafka time of
// each partition's first record still in the log (zero for an empty partition). It
// lists every partition's first and last offset in one request, then reads the first
// record of the non-empty ones, concurrently. It reads the topic's metadata afresh,
// not from the Client's cache: a layout that missed partitions added a moment ago
// would take records routed among all of them for misrouted ones.
func (c *Client) ReadLayout(ctx context.Context, topic string) (Layout, error) {
	if topic == "" {
		return Layout{}, errors.New("eventlog: read layout: topic name is empty")
	}
	c.refresh()
	client := c.kc
	starts, ends, err := listBounds(ctx, client, topic)
	if err != nil {
		return Layout{}, fmt.Errorf("eventlog: read layout of %s: %w", topic, err)
	}
	first := make([]time.Time, len(starts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for p := range starts {
		if ends[p] <= starts[p] {
			continue
		}
		g.Go(func() error {
			t, err := firstRecordTime(gctx, client, topic, p, starts[p], ends[p])
			if err != nil {
				return fmt.Errorf("eventlog: read layout of %s: first record of partition %d: %w", topic, p, err)
			}
			first[p] = t
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Layout{}, err
	}
	return NewLayout(first), nil
}

// listBounds returns each partition's log start and end offsets (index = partition),
// for every partition the topic has now.
func listBounds(ctx context.Context, client *kafka.Client, topic string) (starts, ends []int64, err error) {
	n, err := partitionCount(ctx, client, topic)
	if err != nil {
		return nil, nil, err
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*n)
	for p := range n {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets: %w", err)
	}
	starts, ends = make([]int64, n), make([]int64, n)
	seen := make([]bool, n)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, nil, fmt.Errorf("list offsets of partition %d: %w", po.Partition, po.Error)
		}
		if po.Partition < 0 || po.Partition >= n {
			continue
		}
		starts[po.Partition], ends[po.Partition], seen[po.Partition] = po.FirstOffset, po.LastOffset, true
	}
	for p, ok := range seen {
		if !ok {
			return nil, nil, fmt.Errorf("list offsets: no answer for partition %d", p)
		}
	}
	return starts, ends, nil
}

// partitionCount asks a client for the topic's partition count.
func partitionCount(ctx context.Context, client *kafka.Client, topic string) (int, error) {
	resp, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("metadata: %w", err)
	}
	for _, t := range resp.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return 0, fmt.Errorf("metadata: %w", t.Error)
			}
			return len(t.Partitions), nil
		}
	}
	return 0, fmt.Errorf("metadata: %w", kafka.UnknownTopicOrPartition)
}

// firstRecordTime returns the time of the first record at or after offset start and
// before end. A partition that holds only control records (transaction markers) in
// that range gives the zero time, as an empty one does.
func firstRecordTime(ctx context.Context, client *kafka.Client, topic string, part int, start, end int64) (time.Time, error) {
	for from := start; from < end; {
		resp, err := client.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: part, Offset: from,
			MinBytes: 1, MaxBytes: layoutFetchBytes, MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			return time.Time{}, err
		}
		if resp.Error != nil {
			return time.Time{}, resp.Error
		}
		next := from
		for {
			r, err := resp.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return time.Time{}, err
			}
			if r.Offset >= from {
				return r.Time, nil
			}
			next = max(next, r.Offset+1)
		}
		if next == from {
			// Nothing readable at from (only control batches, or nothing yet).
			return time.Time{}, nil
		}
		from = next
	}
	return time.Time{}, nil
}
