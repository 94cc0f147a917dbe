package statusview

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/projector/projector/pkg/projector"
)

// ProgressBar draws the catch-up on a terminal until ctx ends; the function it
// returns waits for the bar to finish.
func ProgressBar(ctx context.Context, r *projector.Runner, out io.Writer) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		drawn := false
		for {
			select {
			case <-ctx.Done():
				if drawn {
					_, _ = fmt.Fprintln(out)
				}
				return
			case <-t.C:
			}
			st := r.Status()
			var next, end int64
			var rate float64
			for _, p := range st.Partitions {
				next, end, rate = next+p.Next, end+p.HighWater, rate+p.EventsPerSec
			}
			if end == 0 || (st.Ready && !drawn) {
				continue
			}
			frac := float64(next) / float64(end)
			const width = 30
			bar := strings.Repeat("#", int(frac*width)) + strings.Repeat(".", width-int(frac*width))
			eta := "-"
			if rate > 0 {
				eta = (time.Duration(float64(st.Lag) / rate * float64(time.Second))).Round(time.Second).String()
			}
			_, _ = fmt.Fprintf(out, "\r[%s] %5.1f%%  %d/%d  lag %d  %.0f events/s  ETA %s   ", bar, 100*frac, next, end, st.Lag, rate, eta)
			drawn = true
		}
	}()
	return func() { <-done }
}
