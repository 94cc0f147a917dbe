package main

import (
	"context"
	"fmt"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/pkg/eventlog/doctor"
)

// Doctor is scenario 5: the log doctor (producer check) over the whole bench log,
// beside raw kafka-go consumption of the same topic, runs interleaved in one run.
type Doctor struct {
	Records          int64     `json:"records"`
	Runs             []float64 `json:"runs_seconds"`
	Seconds          float64   `json:"seconds"` // median
	RecordsPerSec    float64   `json:"records_per_sec"`
	RawConsumePerSec float64   `json:"raw_consume_per_sec"` // median of as many runs
	RatioToRaw       float64   `json:"ratio_to_raw_consume"`
	PeakRSSMB        float64   `json:"peak_rss_mb"`
	IDSetMB          float64   `json:"id_set_mb"`
	Passes           int       `json:"passes"`
	// Problems is what the doctor found in the bench log: its UserRegistered
	// events are published without a master key, so their personal fields are
	// plaintext (and their data is read, the doctor's slowest path).
	Problems map[doctor.Kind]int64 `json:"problems"`
	// Measured and Commit say when and on what this figure was taken: bench
	// --only doctor refreshes it alone in latest.json.
	Measured time.Time `json:"measured"`
	Commit   string    `json:"commit"`
}

// doctor times the doctor and raw consumption over the bench log, alternately.
func (e *env) doctor(ctx context.Context) (Doctor, error) {
	d := Doctor{Measured: time.Now().UTC(), Commit: gitCommit(ctx)}
	var raws []float64
	for i := range max(1, e.c.runs) {
		raw, err := e.rawConsume(ctx)
		if err != nil {
			return d, fmt.Errorf("raw consumption: %w", err)
		}
		raws = append(raws, raw)
		resetPeakRSS()
		rep, err := doctor.Scan(ctx, doctor.Config{Brokers: e.brokers, Topic: e.topic, Registry: domain.Registry()})
		if err != nil {
			return d, err
		}
		d.PeakRSSMB = max(d.PeakRSSMB, peakRSSMB())
		d.Runs = append(d.Runs, rep.Seconds)
		d.Records, d.Passes, d.Problems = rep.Records, rep.Passes, rep.Counts
		d.IDSetMB = float64(rep.IDSetBytes) / (1 << 20)
		logf("doctor run %d: %d records in %.2f s (%.0f/s), raw consumption %.0f/s, %d problems",
			i+1, rep.Records, rep.Seconds, float64(rep.Records)/rep.Seconds, raw, rep.Problems())
	}
	d.Seconds = median(d.Runs)
	d.RecordsPerSec = float64(d.Records) / d.Seconds
	d.RawConsumePerSec = median(raws)
	d.RatioToRaw = d.RecordsPerSec / d.RawConsumePerSec
	return d, nil
}
