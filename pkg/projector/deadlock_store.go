package projector

import (
	"context"

	"go.uber.org/zap"

	"github.com/projector/projector/internal/store"
)

// storeDeadlock adds the deadlock to the partition's stored count, which status
// reads from another process or after a restart. Failing to is logged, not fatal:
// the batch's retry does not wait on a counter.
func (r *Runner) storeDeadlock(ctx context.Context, p *partition) {
	k := p.Key
	if err := store.CountDeadlock(ctx, r.cfg.Pool, r.cfg.Schema, k.Projection, k.Version, k.Topic, k.Partition); err != nil {
		p.Log.Warn("deadlock: not counted in the stored status", zap.Error(err))
	}
}
