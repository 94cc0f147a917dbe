// Package stopat is the end of a bounded run (projector's Config.StopAt, which
// point-in-time replays use): the run is over once the read model and every
// effect's watermark stored a position at or past the stop offset of each
// partition.
//
// # The cut
//
// Package projector's Run waits here (Bound.Wait) beside its workers and stops
// itself when the bound is reached; its workers read no further than the bound
// (Runner.beyondStop) and keep their claims meanwhile. What is stored, and how it
// is listed, is package offsets'.
package stopat

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projector/projector/internal/poll"
	"github.com/projector/projector/pkg/offsets"
)

// Bound is a bounded run's end, and where to read how far the run got.
type Bound struct {
	At         map[int]int64 // partition: the offset the run stops before
	Topic      string
	Pool       *pgxpool.Pool
	Offsets    *offsets.Store
	Projection string
	Version    int
	Effects    []string // the effects' names: each watermark must get there too
}

// Wait returns true once every partition's stored position, the read model's and
// each effect's, reached its offset in At; false when ctx ends first. It looks
// every tenth of a second.
func (b Bound) Wait(ctx context.Context) bool {
	return poll.Every(ctx, 100*time.Millisecond, func() bool { return b.reached(ctx) })
}

// reached reports whether the read model and every effect's watermark got there;
// an error reading them is "not yet".
func (b Bound) reached(ctx context.Context) bool {
	lists := []func() ([]offsets.Position, error){func() ([]offsets.Position, error) {
		return b.Offsets.List(ctx, b.Pool, b.Projection, b.Version)
	}}
	for _, eff := range b.Effects {
		lists = append(lists, func() ([]offsets.Position, error) {
			return b.Offsets.ListEffect(ctx, b.Pool, eff, b.Projection, b.Version)
		})
	}
	for _, list := range lists {
		pos, err := list()
		if err != nil {
			return false
		}
		at := map[int]int64{}
		for _, p := range pos {
			if p.Topic == b.Topic {
				at[p.Partition] = p.Next
			}
		}
		for part, end := range b.At {
			if at[part] < end {
				return false
			}
		}
	}
	return true
}
