package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/lane"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
)

// The live scenario's baseline: the least a consumer must do to show an event in
// the read model, written by hand, measured the same way as the projector (the same
// publisher, traffic and poller, on the same machine in the same minutes).
//
// On two shared cores the p99 at 2,000 events/s depends on the hour as much as on
// the code: in one day's runs the projector's ranged 48–161 ms. A floor measured
// beside it tells the two apart: the projector's p99 over the floor's is the
// framework's cost, and the floor's own p99 is what the machine gives any consumer
// with the same batch window.
//
// The floor keeps what a consumer that shows an event within a batch window,
// durably and once, cannot drop, with the projector's settings for each:
//   - a reader per partition with the projector's fetch settings (internal/lane:
//     MinBytes 1, MaxWait 250 ms, a queue of 100), no consumer group;
//   - a batch gathered for projector.BatchTimeoutDefault after its first record
//     came, or after the batch before was handed over if the record was waiting
//     then and was the log's last when fetched, as the projector's live batches
//     are (internal/lane's readBatch);
//   - each record decoded as the projector decodes it (eventlog.FromMessage, the
//     registry);
//   - one transaction a batch, in one round trip: the users inserted with one
//     statement, and the partition's position stored with them.
//
// It leaves out everything else the framework does: sequence marks (duplicates,
// gaps, out-of-order events), the fenced position and the group's claims, parking,
// the status board, metrics, effects.

// floorOffsetsSQL makes the floor's position table.
const floorOffsetsSQL = `CREATE TABLE floor_offsets (part int PRIMARY KEY, next bigint NOT NULL)`

// startLiveFloor starts the floor consumer of topic's partitions into pool's users
// table; stop ends it and waits. Its readers start at the log's start, as the
// projector's do on a fresh topic.
func (e *env) startLiveFloor(ctx context.Context, topic string, pool *pgxpool.Pool) (stop func(), err error) {
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return nil, err
	}
	if err := readmodel.Setup(ctx, pool, "projector", p); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, floorOffsetsSQL); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, e.c.partitions)
	for part := range e.c.partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := floorPartition(rctx, e.brokers, topic, part, pool); err != nil && rctx.Err() == nil {
				errs <- fmt.Errorf("live floor, partition %d: %w", part, err)
			}
		}()
	}
	time.Sleep(time.Second) // the readers connect, as the projector's are given a second after it joined
	return func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			logf("%v", err)
		}
	}, nil
}

// floorPartition consumes one partition until ctx ends: a batch gathered for the
// batch window, opened as the projector's is (see the list above), then written in
// one transaction.
func floorPartition(ctx context.Context, brokers []string, topic string, part int, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, `INSERT INTO floor_offsets VALUES ($1, 0)`, part); err != nil {
		return err
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: part,
		MinBytes: 1, MaxBytes: 2 << 20, MaxWait: 250 * time.Millisecond, QueueCapacity: 100})
	defer func() { _ = r.Close() }()
	reg := domain.Registry()
	var handed time.Time
	for ctx.Err() == nil {
		asked := time.Now()
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		batch := []kafka.Message{m}
		closes := lane.BatchWindow(asked, time.Now(), handed, m, projector.BatchTimeoutDefault)
		wait, cancel := context.WithDeadline(ctx, closes)
		for len(batch) < projector.BatchSizeDefault {
			m, err := r.FetchMessage(wait)
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		cancel()
		handed = time.Now()
		var ids, emails, names []string
		var at []time.Time
		for _, m := range batch {
			ev, err := eventlog.FromMessage(m)
			if err != nil {
				return err
			}
			d, err := reg.Decode(ev)
			if err != nil {
				return err
			}
			u, ok := d.Value.(domain.UserRegistered)
			if !ok {
				return fmt.Errorf("offset %d: a %s, where the live traffic is of users registered", m.Offset, ev.Type)
			}
			ids, emails, names, at = append(ids, u.UserID), append(emails, u.Email), append(names, u.Name), append(at, ev.Time)
		}
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO users_v1.users (user_id, email, name, registered_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) ON CONFLICT (user_id) DO NOTHING`, ids, emails, names, at)
		b.Queue(`UPDATE floor_offsets SET next = $2 WHERE part = $1`, part, batch[len(batch)-1].Offset+1)
		// A batch outside a transaction block runs as one implicit transaction:
		// both statements commit together, in one round trip.
		if err := pool.SendBatch(ctx, b).Close(); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
	}
	return nil
}
