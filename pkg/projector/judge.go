package projector

import "github.com/projector/projector/internal/judge"

// rules are what judge.Rules.Judge needs to decide on the partition's events.
func (r *Runner) rules(p *partition, retry bool) judge.Rules {
	return judge.Rules{Partition: p.Key.Partition, Layout: p.layout, HaltOnGap: r.cfg.Gaps == GapHalt,
		ParkUnknown: r.cfg.Unknown == UnknownPark, Handles: r.cfg.Projection.Handles, Retry: retry}
}
