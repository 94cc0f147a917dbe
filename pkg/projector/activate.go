package projector

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/store"
)

// activateLoop activates this version once every partition is live (the owner of
// partition 0 runs it), then idles until the generation ends. Never over an
// operator's choice: only over an older version, or none.
func (r *Runner) activateLoop(ctx context.Context) {
	name, version := r.cfg.Projection.Name(), r.cfg.Projection.Version()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if live, err := r.allLive(ctx); err != nil || !live {
			continue
		}
		active, _, err := store.ActiveVersion(ctx, r.cfg.Pool, r.cfg.Schema, name)
		if err != nil {
			continue
		}
		if active >= version {
			<-ctx.Done()
			return
		}
		if err := store.Activate(ctx, r.cfg.Pool, r.cfg.Schema, name, version); err != nil {
			r.log.Warn("activating this version failed; retrying", zap.Error(err))
			continue
		}
		r.log.Info("version is live: the stable views now point at it", zap.String("schema", r.cfg.Projection.Schema()))
	}
}

// allLive reports whether every partition of the topic is live from what is
// stored, whichever instance owns it: a stored position (a claim) within ReadyLag
// of its log end, as the status command's inspection decides.
func (r *Runner) allLive(ctx context.Context) (bool, error) {
	n, err := r.client.Partitions(ctx, r.cfg.Topic)
	if err != nil || n == 0 {
		return false, err
	}
	reqs := make([]kafka.OffsetRequest, n)
	for p := range n {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	resp, err := r.client.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{r.cfg.Topic: reqs}})
	if err != nil {
		return false, err
	}
	stored, err := r.offsets.List(ctx, r.cfg.Pool, r.cfg.Projection.Name(), r.cfg.Projection.Version())
	if err != nil {
		return false, err
	}
	next := map[int]int64{}
	claimed := map[int]bool{}
	for _, pos := range stored {
		if pos.Topic == r.cfg.Topic {
			next[pos.Partition], claimed[pos.Partition] = pos.Next, pos.Member != ""
		}
	}
	if len(next) == 0 {
		return false, nil // never run
	}
	for _, po := range resp.Topics[r.cfg.Topic] {
		if po.Error != nil {
			return false, po.Error
		}
		if (!claimed[po.Partition] && po.LastOffset > 0) || po.LastOffset-next[po.Partition] > r.readyLag {
			return false, nil
		}
	}
	return len(resp.Topics[r.cfg.Topic]) == n, nil
}
