// Command bench measures the projector against the real stack, each figure beside a
// baseline measured in the same run on the same machine, and writes
// bench/results/latest.{json,md,png}. make bench runs it with the defaults.
//
// Scenarios (the example domain's generated log, fixed seed, 12 partitions):
//   - replay from zero into a fresh database, repeated (median and spread), checked
//     against an independent fold; baselines: a naive consumer (group reader, one
//     upsert per event in autocommit, a Kafka commit per message) on a sample, raw
//     kafka-go consumption, and COPY of the same final rows
//   - bootstrap from a snapshot taken at 90% of the log, then catch-up
//   - live latency from the producer's acknowledgement to the row being visible;
//     baseline: the same traffic into a hand-written consumer, one transaction a
//     batch (livefloor.go)
//   - side effects with a no-op sink: runs per second and Redis round trips per batch
//   - the log doctor (producer check) over the whole log, beside raw consumption
//   - shared rows: a million orders keyed by order id folding into per-customer
//     totals that every partition updates, on the row API, checked against an
//     independent fold, beside the replay's events/s; deadlocks counted. The Exec
//     handlers, which deadlock, replay a small prefix as a labelled baseline
//
// The two logs are generated at once (a full topic is reused).
//
// Each phase's time is logged as it ends and listed in the results.
//
// --only runs some scenarios and updates just their figures in latest.json.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/service"
)

// Result is the JSON the run writes.
type Result struct {
	Machine   Machine   `json:"machine"`
	Replay    Replay    `json:"replay"`
	Bootstrap Bootstrap `json:"bootstrap"`
	Live      Live      `json:"live"`
	Effects   Effects   `json:"effects"`
	History   History   `json:"history"`
	Doctor    Doctor    `json:"doctor"`
	Shared    Shared    `json:"shared_rows"`
	Phases    []Phase   `json:"phases"`        // where the time went, in run order
	Series    []Point   `json:"replay_series"` // events/s over time during the median replay
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
}

// Machine says where the figures come from.
type Machine struct {
	Cores    int    `json:"cores"`
	MemoryMB int64  `json:"memory_mb"`
	Go       string `json:"go"`
	Kafka    string `json:"kafka"`
	Postgres string `json:"postgres"`
	Redis    string `json:"redis"`
	Commit   string `json:"commit"`
}

// Replay is scenario 1.
type Replay struct {
	Events            int64     `json:"events"`
	Runs              []float64 `json:"runs_seconds"`
	Seconds           float64   `json:"seconds"` // median
	EventsPerSec      float64   `json:"events_per_sec"`
	PeakRSSMB         float64   `json:"peak_rss_mb"`
	Verified          bool      `json:"verified_against_fold"`
	NaiveSample       int64     `json:"naive_sample_events"`
	NaiveEventsPerSec float64   `json:"naive_events_per_sec"`
	RawConsumePerSec  float64   `json:"raw_consume_per_sec"`
	CopyRowsPerSec    float64   `json:"copy_rows_per_sec"` // median of CopyRuns
	CopyRuns          []float64 `json:"copy_runs_rows_per_sec"`
	CopyRows          int64     `json:"copy_rows"`
	RatioToCopy       float64   `json:"ratio_to_copy"`
	RatioToNaive      float64   `json:"ratio_to_naive"`
	RatioToRawConsume float64   `json:"ratio_to_raw_consume"`
	// The whole machine's busy cores through each run (machinecpu.go), and the
	// median run's.
	RunsBusyCores []float64 `json:"runs_machine_busy_cores"`
	BusyCores     float64   `json:"machine_busy_cores"`
}

// Bootstrap is scenario 2.
type Bootstrap struct {
	SnapshotEvents int64   `json:"snapshot_events"`
	SnapshotBytes  int64   `json:"snapshot_bytes"`
	RestoreSeconds float64 `json:"restore_seconds"`
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	Seconds        float64 `json:"seconds"` // the median run's
	RatioToReplay  float64 `json:"ratio_to_replay"`
	// The whole machine's busy cores through the restore and through the catch-up.
	RestoreBusyCores float64   `json:"restore_machine_busy_cores"`
	CatchUpBusyCores float64   `json:"catch_up_machine_busy_cores"`
	Verified         bool      `json:"verified_against_fold"` // every run
	Runs             []float64 `json:"runs_seconds"`
}

// Live is scenario 3.
type Live struct {
	Rate    int       `json:"rate"`
	Seconds int       `json:"seconds"`
	Events  int       `json:"events"`
	P50MS   float64   `json:"p50_ms"`
	P99MS   float64   `json:"p99_ms"` // the median run's, and its p50 and max
	MaxMS   float64   `json:"max_ms"`
	RunsP99 []float64 `json:"runs_p99_ms"`
	// The p99 of the events acknowledged in the first liveStartSeconds, while the
	// fresh service's tables fill from empty, and of the rest: a diagnosis of the
	// p99 above, which counts both.
	StartP99MS  float64 `json:"start_p99_ms"`
	SteadyP99MS float64 `json:"steady_p99_ms"`
	BusyCores   float64 `json:"machine_busy_cores"` // the whole machine's, through the traffic
	// The baseline: the same traffic into a hand-written consumer (livefloor.go),
	// run beside each of the projector's runs; its median run, and the projector's
	// p99 over its p99.
	Floor        *Live   `json:"floor,omitempty"`
	RatioToFloor float64 `json:"p99_ratio_to_floor,omitempty"`
}

// Effects is scenario 4.
type Effects struct {
	Events                int64     `json:"events"`
	PerSec                float64   `json:"per_sec"`
	RedisRoundTripsPerBat float64   `json:"redis_round_trips_per_batch"`
	SetNXBaselinePerSec   float64   `json:"redis_setnx_baseline_per_sec"`
	Runs                  []float64 `json:"runs_per_sec"`       // the median run's figures above
	BusyCores             float64   `json:"machine_busy_cores"` // the whole machine's, through the runs
}

// Phase is one step of the run and how long it took.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Point is one sample of the replay's progress.
type Point struct {
	Seconds      float64 `json:"t"`
	EventsPerSec float64 `json:"events_per_sec"`
}

type config struct {
	brokers, databaseURL, redisURL string
	events                         int
	partitions                     int
	runs                           int
	naiveSample                    int
	liveSeconds, liveRate          int
	effects                        int
	sharedEvents, sharedCustomers  int
	sharedExecEvents               int
	setupOnly                      bool
	out                            string
	seed                           uint64
	cpuProfile                     string
	memProfile                     string
	memoryLimit                    string
	only                           map[string]bool // scenarios to run; empty: all
}

// scenarios are the names --only takes, in run order.
var scenarios = []string{"replay", "bootstrap", "history", "live", "effects", "doctor", "shared"}

// wants reports whether scenario name is to run.
func (c config) wants(name string) bool { return len(c.only) == 0 || c.only[name] }

func main() {
	var c config
	f := flag.NewFlagSet("bench", flag.ExitOnError)
	f.StringVar(&c.brokers, "brokers", envOr("KAFKA_BROKERS", "127.0.0.1:19092"), "Kafka brokers (env KAFKA_BROKERS)")
	f.StringVar(&c.databaseURL, "database-url", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable"), "PostgreSQL (env DATABASE_URL)")
	f.StringVar(&c.redisURL, "redis-url", envOr("REDIS_URL", "redis://127.0.0.1:16379/0"), "Redis (env REDIS_URL)")
	f.IntVar(&c.events, "events", 1_000_000, "events in the log")
	f.IntVar(&c.partitions, "partitions", 12, "partitions")
	f.IntVar(&c.runs, "runs", 3, "runs of each timed scenario (replay, bootstrap, history, live, effects, doctor, and the shared rows' row API): the median run is reported")
	f.IntVar(&c.naiveSample, "naive-sample", 1_000, "events the naive consumer is timed on (it runs at 80 to a few hundred a second, steadily)")
	f.IntVar(&c.liveSeconds, "live-seconds", 30, "live latency: seconds of steady traffic (30 s at 2,000/s: 60,000 samples, 600 above the p99)")
	f.IntVar(&c.liveRate, "live-rate", 2000, "live latency: events per second")
	f.IntVar(&c.effects, "effects", 100_000, "effect-bearing events")
	f.IntVar(&c.sharedEvents, "shared-events", 1_000_000, "shared rows: order events, replayed whole on the row API")
	f.IntVar(&c.sharedExecEvents, "shared-exec-events", 2_000, "shared rows: the Writer.Exec baseline's sample, a prefix of the same log (its handlers deadlock: 50 to 100 events/s here); 0 skips it")
	f.IntVar(&c.sharedCustomers, "shared-customers", 2_000, "shared rows: customers the orders count towards")
	f.BoolVar(&c.setupOnly, "setup-only", false, "create and fill the bench log, then stop: measures nothing, writes nothing")
	f.Uint64Var(&c.seed, "seed", 1, "generator seed")
	f.StringVar(&c.out, "out", "bench/results", "output folder")
	f.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the first replay run to this file (go tool pprof -top)")
	f.StringVar(&c.memProfile, "memprofile", "", "write a heap profile of the first replay run, taken halfway through it, to this file (go tool pprof -sample_index=inuse_space -top)")
	f.StringVar(&c.memoryLimit, "memory-limit", service.MemoryLimitDefault, "the Go runtime's soft memory limit during each replay run, as the service's run sets it (off: none); the bench's own work (the fold, the baselines) runs without it")
	redraw := f.Bool("redraw", false, "rewrite the table and plot from OUT/latest.json, measuring nothing")
	only := f.String("only", "", "run only these scenarios, comma-separated ("+strings.Join(scenarios, ", ")+"); the other figures in OUT/latest.json are kept")
	_ = f.Parse(os.Args[1:])
	for name := range strings.SplitSeq(*only, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !slices.Contains(scenarios, name) {
			fmt.Fprintf(os.Stderr, "bench: --only %q: unknown scenario %q (want %s)\n", *only, name, strings.Join(scenarios, ", "))
			os.Exit(2)
		}
		if c.only == nil {
			c.only = map[string]bool{}
		}
		c.only[name] = true
	}
	if *redraw {
		var res Result
		b, err := os.ReadFile(filepath.Join(c.out, "latest.json"))
		if err == nil {
			err = json.Unmarshal(b, &res)
		}
		if err == nil {
			err = write(c.out, res)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if _, err := cli.ParseMemoryLimit(c.memoryLimit); err != nil {
		fmt.Fprintln(os.Stderr, "bench: --memory-limit", err)
		os.Exit(2)
	}
	if c.runs < 1 {
		fmt.Fprintf(os.Stderr, "bench: --runs %d: at least one run of each scenario is needed\n", c.runs)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := run(ctx, c)
	stop()
	if err == nil && c.setupOnly {
		return
	}
	if err == nil && len(c.only) > 0 {
		res, err = keepOthers(filepath.Join(c.out, "latest.json"), res, c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := write(c.out, res); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	b, _ := os.ReadFile(filepath.Join(c.out, "latest.md"))
	fmt.Print(string(b))
}

// keepOthers takes the figures of the scenarios not run from the previous results.
func keepOthers(path string, res Result, c config) (Result, error) {
	var prev Result
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return res, nil
		}
		return res, err
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	if !c.wants("replay") {
		res.Replay, res.Series = prev.Replay, prev.Series
	}
	if !c.wants("bootstrap") {
		res.Bootstrap = prev.Bootstrap
	}
	if !c.wants("history") {
		res.History = prev.History
	}
	if !c.wants("live") {
		res.Live = prev.Live
	}
	if !c.wants("effects") {
		res.Effects = prev.Effects
	}
	if !c.wants("doctor") {
		res.Doctor = prev.Doctor
	}
	if !c.wants("shared") {
		res.Shared = prev.Shared
	}
	res.Machine.Commit = prev.Machine.Commit // the full run's; each scenario run with --only carries its own
	res.Started, res.Seconds = prev.Started, prev.Seconds
	return res, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func write(dir string, r Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(table(r)), 0o644); err != nil {
		return err
	}
	return plot(filepath.Join(dir, "latest.png"), r)
}

func table(r Result) string {
	var sb strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&sb, f, a...) }
	rp := r.Replay
	p("# projector bench — %s\n\n", r.Started.Format(time.RFC3339))
	p("machine: %d cores, %d MB, %s, Kafka %s, PostgreSQL %s, Redis %s, commit %s\n\n",
		r.Machine.Cores, r.Machine.MemoryMB, r.Machine.Go, r.Machine.Kafka, r.Machine.Postgres, r.Machine.Redis, r.Machine.Commit)
	p("| scenario | figure | baseline (same run) | ratio | target |\n| --- | --- | --- | --- | --- |\n")
	cores := r.Machine.Cores
	p("| replay %d events (median of %d: %s s) | %.0f events/s, peak RSS %.0f MB, equals fold: %v; %s | COPY %.0f rows/s (median of %s) | %.2f × COPY | ≥ 0.35 × COPY (≥ 60,000/s on the reference machine: docs/benchmarks.md), RSS ≤ 150 MB |\n",
		rp.Events, len(rp.Runs), fmtRuns(rp.Runs), rp.EventsPerSec, rp.PeakRSSMB, rp.Verified, fmtBusy(rp.BusyCores, cores), rp.CopyRowsPerSec, fmtRuns0(rp.CopyRuns), rp.RatioToCopy)
	p("| | | naive consumer %.0f events/s (sample %d) | %.1f × naive | ≥ 20 × naive |\n", rp.NaiveEventsPerSec, rp.NaiveSample, rp.RatioToNaive)
	p("| | | raw kafka-go consumption %.0f events/s | %.2f × raw | |\n", rp.RawConsumePerSec, rp.RatioToRawConsume)
	b := r.Bootstrap
	p("| bootstrap from a snapshot at %d events, then catch-up (median of %d: %s s) | %.1f s (restore %.1f s + catch-up %.1f s), snapshot %.0f MB, equals fold: %v; restore: %s, catch-up: %s | full replay %.1f s | %.2f × replay | ≤ 0.2 × replay |\n",
		b.SnapshotEvents, len(b.Runs), fmtRuns(b.Runs), b.Seconds, b.RestoreSeconds, b.CatchUpSeconds, float64(b.SnapshotBytes)/(1<<20), b.Verified, fmtBusy(b.RestoreBusyCores, cores), fmtBusy(b.CatchUpBusyCores, cores), rp.Seconds, b.RatioToReplay)
	if h := r.History; h.Events > 0 {
		p("| replay with an effect whose horizon the history predates (median of %d: %s s) | %.0f events/s, %d runs fired, %d events read by the effect from the log, equals the replay: %v; %s | replay %.0f events/s | %.2f × replay | ≥ 0.9 × replay, nothing fired |\n",
			len(h.Runs), fmtRuns(h.Runs), h.EventsPerSec, h.Fired, h.EffectLogReads, h.Verified, fmtBusy(h.BusyCores, cores), h.ReplayPerSec, h.RatioToReplay)
	}
	l := r.Live
	floor, ratio := "", ""
	if f := l.Floor; f != nil {
		floor = fmt.Sprintf("floor: a hand-written consumer, one transaction a batch (p99 median of %d: %s ms): p50 %.1f ms, p99 %.1f ms; %s",
			len(f.RunsP99), fmtRuns(f.RunsP99), f.P50MS, f.P99MS, fmtBusy(f.BusyCores, cores))
		ratio = fmt.Sprintf("%.2f × floor (p99)", l.RatioToFloor)
	}
	p("| live latency, %d events/s for %d s (%d events; p99 median of %d: %s ms) | p50 %.1f ms, p99 %.1f ms, max %.1f ms (p99 of the first %d s %.1f ms, of the rest %.1f ms); %s | %s | %s | p99 ≤ 50 ms |\n",
		l.Rate, l.Seconds, l.Events, len(l.RunsP99), fmtRuns(l.RunsP99), l.P50MS, l.P99MS, l.MaxMS, liveStartSeconds, l.StartP99MS, l.SteadyP99MS, fmtBusy(l.BusyCores, cores), floor, ratio)
	e := r.Effects
	p("| side effects, %d events, no-op sink (median of %d: %s runs/s) | %.0f runs/s, %.2f Redis round trips per batch; %s | raw SET NX %.0f keys/s | | ≥ 20,000/s, ≤ 2 round trips |\n",
		e.Events, len(e.Runs), fmtRuns0(e.Runs), e.PerSec, e.RedisRoundTripsPerBat, fmtBusy(e.BusyCores, cores), e.SetNXBaselinePerSec)
	dr := r.Doctor
	if dr.Records > 0 {
		p("| log doctor (producer check), %d records (median of %d: %s s) | %.0f records/s, peak RSS %.0f MB, id set %.0f MB, %d pass(es) | raw kafka-go consumption %.0f records/s | %.2f × raw | ≥ 200,000/s |\n",
			dr.Records, len(dr.Runs), fmtRuns(dr.Runs), dr.RecordsPerSec, dr.PeakRSSMB, dr.IDSetMB, dr.Passes, dr.RawConsumePerSec, dr.RatioToRaw)
	}
	sharedRows(p, r.Shared)
	p("\ntotal bench time %.0f s\n", r.Seconds)
	if len(r.Phases) > 0 {
		p("\n| phase | seconds |\n| --- | --- |\n")
		for _, ph := range r.Phases {
			p("| %s | %.1f |\n", ph.Name, ph.Seconds)
		}
	}
	if dr.Records > 0 && dr.Commit != r.Machine.Commit {
		p("\nthe log doctor's row: measured %s on commit %s (bench --only doctor)\n", dr.Measured.Format(time.RFC3339), dr.Commit)
	}
	return sb.String()
}

// sharedRows writes the shared-rows scenario's rows of the table: the row API over
// the whole log against the example's replay, then the Exec baseline's sample.
func sharedRows(p func(string, ...any), sh Shared) {
	if sh.Events == 0 {
		return
	}
	replay, ratio := "replay of the example not in this run", "-"
	if sh.ReplayEventsPerSec > 0 {
		replay = fmt.Sprintf("replay of the example %.0f events/s", sh.ReplayEventsPerSec)
		ratio = fmt.Sprintf("%.2f × replay", sh.RatioToReplay)
	}
	p("| shared rows: %d order events, %d customers, %d partitions, batch %d, row API (median of %d: %s s) | %.0f events/s (%.1f s), %d deadlocks (40P01), %d batch retries in all runs, equals fold: %v | %s | %s | ≥ 0.7 × replay, 0 deadlock retries |\n",
		sh.Events, sh.Customers, sh.Partitions, sh.BatchSize, len(sh.Runs), fmtRuns(sh.Runs), sh.EventsPerSec, sh.Seconds, sh.Deadlocks, sh.Retries, sh.Verified, replay, ratio)
	if sh.ExecEvents > 0 {
		p("| | | Writer.Exec handlers, small sample (the first %d events of the same log): %.0f events/s (%.1f s), %d deadlocks, %d retries, equals fold: %v | %.1f × Exec (sample) | |\n",
			sh.ExecEvents, sh.Exec.EventsPerSec, sh.Exec.Seconds, sh.Exec.Deadlocks, sh.Exec.Retries, sh.Exec.Verified, sh.RowsOverExec)
	}
}

// fmtRuns0 is fmtRuns without decimals.
func fmtRuns0(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, ", ")
}

// medianRun runs a scenario n times and returns the run whose key figure is the
// median, with every run's key figure in run order.
func medianRun[T any](n int, fn func(i int) (T, error), key func(T) float64) (T, []float64, error) {
	var runs []T
	var keys []float64
	for i := range max(n, 1) {
		r, err := fn(i)
		if err != nil {
			var zero T
			return zero, keys, fmt.Errorf("run %d: %w", i+1, err)
		}
		runs = append(runs, r)
		keys = append(keys, key(r))
	}
	m := median(keys)
	for i, k := range keys {
		if k == m {
			return runs[i], keys, nil
		}
	}
	return runs[0], keys, nil
}

func fmtRuns(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.1f", x))
	}
	return strings.Join(parts, ", ")
}

func machine(ctx context.Context, c config) Machine {
	m := Machine{Cores: machineCores(runtime.NumCPU()), Go: runtime.Version(), Kafka: "4.1", Commit: gitCommit(ctx)}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		_, _ = fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemoryMB = kb / 1024
	}
	m.Postgres, m.Redis = serverVersions(ctx, c)
	return m
}
