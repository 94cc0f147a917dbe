package lane

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/projector/projector/internal/poll"
)

// Progress logs catch-up progress every so often while any partition on the board
// replays — the lag, the partitions replaying, the rate and an ETA — and keeps the
// lag gauge (by partition) current, until ctx ends.
func (b *Board) Progress(ctx context.Context, every time.Duration, lag *prometheus.GaugeVec, log *zap.Logger) {
	poll.Every(ctx, every, func() bool {
		st := b.Snapshot()
		var rate float64
		replaying := 0
		for _, p := range st.Partitions {
			rate += p.EventsPerSec
			lag.WithLabelValues(strconv.Itoa(p.Partition)).Set(float64(p.Lag))
			if p.State == StateReplaying {
				replaying++
			}
		}
		if replaying == 0 {
			return false
		}
		fields := []zap.Field{zap.Int64("lag", st.Lag), zap.Int("replaying", replaying),
			zap.Int("partitions", len(st.Partitions)), zap.Float64("events_per_sec", float64(int64(rate)))}
		if rate > 0 {
			fields = append(fields, zap.Duration("eta", time.Duration(float64(st.Lag)/rate*float64(time.Second)).Round(time.Second)))
		}
		log.Info("replaying", fields...)
		return false
	})
}
