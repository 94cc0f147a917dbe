// Package activation is blue/green's automatic step (projector's
// Config.ActivateWhenLive): a new projection version points the projection's
// stable views at itself once every partition of its topic is live, judged from
// what is stored, whichever instance owns each partition.
//
// # The cut
//
// Package projector starts Activator.Loop on the member that owns partition 0, for
// the length of its generation. The views and the active version are
// internal/store's (ActiveVersion, Activate); an operator's choice of version is
// package admin's (Versions). Activation never overrides an operator: it only
// replaces an older version, or none.
package activation

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/poll"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/offsets"
)

// Activator activates one projection version when it is live.
type Activator struct {
	Pool       *pgxpool.Pool
	Schema     string // the framework schema
	Projection string
	Version    int
	Views      string // the version's schema, for the log
	Topic      string
	Client     *eventlog.Client
	Offsets    *offsets.Store
	ReadyLag   int64 // the lag a live partition may have
	Log        *zap.Logger
}

// Loop activates the version once every partition is live, then idles until ctx
// ends. It looks twice a second; a failure is retried at the next look.
func (a Activator) Loop(ctx context.Context) {
	poll.Every(ctx, 500*time.Millisecond, func() bool {
		if live, err := a.allLive(ctx); err != nil || !live {
			return false
		}
		active, _, err := store.ActiveVersion(ctx, a.Pool, a.Schema, a.Projection)
		if err != nil {
			return false
		}
		if active >= a.Version {
			<-ctx.Done()
			return true
		}
		if err := store.Activate(ctx, a.Pool, a.Schema, a.Projection, a.Version); err != nil {
			a.Log.Warn("activating this version failed; retrying", zap.Error(err))
			return false
		}
		a.Log.Info("version is live: the stable views now point at it", zap.String("schema", a.Views))
		return false
	})
}

// allLive reports whether every partition of the topic is live from what is
// stored, whichever instance owns it: a stored position (a claim) within ReadyLag
// of its log end, as the status command's inspection decides.
func (a Activator) allLive(ctx context.Context) (bool, error) {
	n, err := a.Client.Partitions(ctx, a.Topic)
	if err != nil || n == 0 {
		return false, err
	}
	reqs := make([]kafka.OffsetRequest, n)
	for p := range n {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	resp, err := a.Client.Kafka().ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{a.Topic: reqs}})
	if err != nil {
		return false, err
	}
	stored, err := a.Offsets.List(ctx, a.Pool, a.Projection, a.Version)
	if err != nil {
		return false, err
	}
	next := map[int]int64{}
	claimed := map[int]bool{}
	for _, pos := range stored {
		if pos.Topic == a.Topic {
			next[pos.Partition], claimed[pos.Partition] = pos.Next, pos.Member != ""
		}
	}
	if len(next) == 0 {
		return false, nil // never run
	}
	for _, po := range resp.Topics[a.Topic] {
		if po.Error != nil {
			return false, po.Error
		}
		if (!claimed[po.Partition] && po.LastOffset > 0) || po.LastOffset-next[po.Partition] > a.ReadyLag {
			return false, nil
		}
	}
	return len(resp.Topics[a.Topic]) == n, nil
}
