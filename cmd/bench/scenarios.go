package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/roundtrips"
	"github.com/projector/projector/internal/store"
	"github.com/projector/projector/pkg/admin"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
	"github.com/projector/projector/pkg/projector"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/sideeffects"
)

type env struct {
	c       config
	brokers []string
	kafka   *eventlog.Client // the run's topic administration; closed when run returns
	admin   *pgxpool.Pool
	topic   string
	ends    map[int]int64
	// ordersEnds are the shared-rows log's partition ends (ensureOrdersLog).
	ordersEnds map[int]int64
	dbsMu      sync.Mutex // dbs: the bootstrap's snapshot source is made beside the replay's check
	dbs        []string
	snap       *snapshotMade // the bootstrap's snapshot, once made
	phaseMu    sync.Mutex    // phases: the shared-rows fold marks its own beside the Exec baseline
	phases     []Phase
	fold       *domain.State // the fold of the bench log, once computed, until the replay is checked
	foldSum    string        // the checksum (readModelSum) of a read model equal to the fold
}

// mark records that the phase name, begun at start, has ended, and logs its time.
func (e *env) mark(name string, start time.Time) {
	d := time.Since(start).Seconds()
	e.phaseMu.Lock()
	e.phases = append(e.phases, Phase{Name: name, Seconds: d})
	e.phaseMu.Unlock()
	logf("phase %s: %.1f s", name, d)
}

func run(ctx context.Context, c config) (Result, error) {
	start := time.Now()
	e := &env{c: c, brokers: cli.SplitList(c.brokers), topic: fmt.Sprintf("bench.users.%d.s%d.p%d", c.events, c.seed, c.partitions)}
	e.kafka = eventlog.NewClient(e.brokers)
	defer e.kafka.Close()
	var err error
	if e.admin, err = pgxpool.New(ctx, c.databaseURL); err != nil {
		return Result{}, err
	}
	defer e.admin.Close()
	defer e.dropDatabases(context.WithoutCancel(ctx))
	defer e.dropSnapshot()
	res := Result{Started: start.UTC(), Machine: machine(ctx, c)}
	t := time.Now()
	if err := e.ensureLogs(ctx); err != nil {
		return res, err
	}
	e.mark("generate or reuse the logs", t)
	if c.setupOnly {
		return res, nil
	}
	if c.wants("replay") || c.wants("bootstrap") || c.wants("history") {
		if res.Replay, res.Series, err = e.replay(ctx); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"bootstrap", func() (err error) {
			res.Bootstrap, res.Bootstrap.Runs, err = medianRun(c.runs, func(int) (Bootstrap, error) { return e.bootstrap(ctx, res.Replay.Seconds) },
				func(b Bootstrap) float64 { return b.Seconds })
			return err
		}},
		{"history", func() (err error) {
			res.History, res.History.Runs, err = medianRun(c.runs, func(int) (History, error) { return e.history(ctx, res.Replay.EventsPerSec) },
				func(h History) float64 { return h.Seconds })
			return err
		}},
		{"live", func() (err error) { res.Live, err = e.liveRuns(ctx); return err }},
		{"effects", func() (err error) {
			res.Effects, res.Effects.Runs, err = medianRun(c.runs, func(int) (Effects, error) { return e.effects(ctx) }, func(f Effects) float64 { return f.PerSec })
			return err
		}},
		{"doctor", func() (err error) { res.Doctor, err = e.doctor(ctx); return err }},
		{"shared", func() (err error) { res.Shared, err = e.shared(ctx, res.Replay.EventsPerSec); return err }},
	}
	// The fold holds the whole read model (hundreds of MB, millions of objects):
	// kept, every collection of the scenarios after the replay would scan it: the
	// bootstrap's catch-up spent about a tenth more CPU in the bench process with it
	// (4.7–5.1 s against 4.2–4.5 s, three runs each), which the replay runs did not
	// pay. The bootstrap checks against its checksum instead (foldSum).
	e.fold = nil
	runtime.GC()
	for _, s := range steps {
		if !c.wants(s.name) {
			continue
		}
		t := time.Now()
		if err := s.fn(); err != nil {
			return res, fmt.Errorf("%s: %w", s.name, err)
		}
		e.mark(s.name, t)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Phases = e.phases
	return res, nil
}

// ensureLogs generates the example's log and, when the shared-rows scenario is to
// run, its orders log, both at once; full topics are reused.
func (e *env) ensureLogs(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return e.ensureLog(gctx) })
	if e.c.wants("shared") {
		g.Go(func() error { return e.ensureOrdersLog(gctx) })
	}
	return g.Wait()
}

// ensureLog generates the log once; a topic of that name already full is reused.
func (e *env) ensureLog(ctx context.Context) error {
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: e.c.seed, Users: 20000})
	if err != nil {
		return err
	}
	e.ends, err = e.ensureTopic(ctx, e.topic, e.c.events, g.Next)
	return err
}

// ensureTopic creates topic, waiting until every partition's leader serves, and fills
// it with n events from next; a topic of that name already full is reused. It
// returns the partitions' end offsets.
func (e *env) ensureTopic(ctx context.Context, topic string, n int, next func() events.Event) (map[int]int64, error) {
	if _, err := e.kafka.EnsureTopic(ctx, eventlog.TopicConfig{Name: topic, Partitions: e.c.partitions}); err != nil {
		return nil, err
	}
	ends, err := e.endOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if have := sum(ends); have >= int64(n) {
		logf("reusing %s: %d events", topic, have)
		return ends, nil
	} else if have > 0 {
		return nil, fmt.Errorf("topic %s holds %d events, not %d: delete it", topic, have, n)
	}
	logf("generating %d events into %s", n, topic)
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: e.brokers, Topic: topic})
	if err != nil {
		return nil, err
	}
	defer func() { _ = pub.Close() }()
	for sent := 0; sent < n; {
		batch := make([]events.Event, min(12000, n-sent))
		for i := range batch {
			batch[i] = next()
		}
		// EnsureTopic waited for the leaders: an error here is not a topic settling.
		if _, err := pub.Publish(ctx, batch...); err != nil {
			return nil, fmt.Errorf("publish to %s: %w", topic, err)
		}
		sent += len(batch)
	}
	return e.endOffsets(ctx, topic)
}

func (e *env) endOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	return admin.UntilOffsets(ctx, e.brokers, topic, time.Now().Add(24*time.Hour))
}

// database creates a database of its own for one run; all are dropped at the end.
func (e *env) database(ctx context.Context, name string) (*pgxpool.Pool, error) {
	name = fmt.Sprintf("bench_%s_%d", name, time.Now().UnixNano()%1_000_000_000)
	if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, err
	}
	e.dbsMu.Lock()
	e.dbs = append(e.dbs, name)
	e.dbsMu.Unlock()
	cfg, err := pgxpool.ParseConfig(e.c.databaseURL)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.Database = name
	cfg.MaxConns = 32
	return pgxpool.NewWithConfig(ctx, cfg)
}

func (e *env) dropDatabases(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, time.Minute)
	defer cancel()
	e.dbsMu.Lock()
	dbs := e.dbs
	e.dbs = nil
	e.dbsMu.Unlock()
	for _, db := range dbs {
		_, _ = e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
	}
}

// drop closes pool and drops its database as soon as a scenario is done with it. A
// database left behind keeps the server busy for the next scenarios: its freshly
// written tables are vacuumed and analyzed by autovacuum for half a minute or more
// (seen: a replay run's articles from the baselines to the catch-up, and the
// snapshot's source during the restore), which is the bench's own leftover, not
// the work measured. A database that cannot be dropped now is dropped at the end.
func (e *env) drop(ctx context.Context, pool *pgxpool.Pool) {
	name := pool.Config().ConnConfig.Database
	pool.Close()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if _, err := e.admin.Exec(dctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		logf("could not drop database %s now (%v): it is dropped at the end", name, err)
		return
	}
	e.dbsMu.Lock()
	e.dbs = slices.DeleteFunc(e.dbs, func(db string) bool { return db == name })
	e.dbsMu.Unlock()
}

// runUntil runs a runner until the stored offsets reach ends, sampling progress,
// and returns the span from its start to its getting there.
func runUntil(ctx context.Context, cfg projector.Config, ends map[int]int64, sample func(t time.Duration, done int64)) (span, error) {
	r, err := projector.New(cfg)
	if err != nil {
		return span{}, err
	}
	if err := r.Setup(ctx); err != nil {
		return span{}, err
	}
	watch := startStopwatch()
	start := watch.start
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	var total int64
	for _, n := range ends {
		total += n
	}
	var took span
	// With effects, the run gets there once the read model and every effect did.
	stored := func() (int64, error) {
		n, err := store.SumNextOffsets(ctx, cfg.Pool, schemaOr(cfg.Schema), cfg.Projection.Name(), cfg.Projection.Version(), cfg.Topic)
		for _, eff := range cfg.Effects {
			var m int64
			if err == nil {
				m, err = store.SumEffectNextOffsets(ctx, cfg.Pool, schemaOr(cfg.Schema), eff.Name(), cfg.Projection.Name(), cfg.Projection.Version(), cfg.Topic)
			}
			n = min(n, m)
		}
		return n, err
	}
	var sampled time.Time
	for {
		sum, err := stored()
		if err == nil && sample != nil && time.Since(sampled) >= sampleEvery {
			sampled = time.Now()
			sample(time.Since(start), sum)
		}
		if err == nil && sum >= total {
			took = watch.stop()
			break
		}
		select {
		case err := <-done:
			cancel()
			if err == nil {
				// A bounded run (StopAt) ends by itself once it got there, maybe
				// between two looks.
				if sum, serr := stored(); serr == nil && sum >= total {
					return watch.stop(), nil
				}
				return span{}, errors.New("runner stopped before the end")
			}
			return span{}, fmt.Errorf("runner stopped: %w", err)
		case <-ctx.Done():
			cancel()
			if err := <-done; err != nil {
				return span{}, errors.Join(ctx.Err(), err)
			}
			return span{}, ctx.Err()
		case <-time.After(lookAfter(sum, total)):
		}
	}
	cancel()
	if err := <-done; err != nil {
		return took, err
	}
	return took, nil
}

// lookAfter is how long runUntil waits before it looks at the stored offsets again,
// at sum of total. A run's time is counted to the first look that finds them at
// the end, so it is late by half the last wait on average: at 100 ms throughout
// that was 50 ms, a quarter of a percent of a replay but nearly 2% of a
// bootstrap's catch-up (2.6–2.8 s), against it. So it looks every 5 ms near the
// end (the last 2% of the offsets: the last half second of a replay, a fifth of a
// catch-up) and every 100 ms before, to add few queries to the run it times.
func lookAfter(sum, total int64) time.Duration {
	if total-sum <= total/50 {
		return 5 * time.Millisecond
	}
	return 100 * time.Millisecond
}

// sampleEvery is how often runUntil hands the progress to its sample function
// (the replay's series).
const sampleEvery = 100 * time.Millisecond

func schemaOr(s string) string {
	if s == "" {
		return readmodel.FrameworkSchemaDefault
	}
	return s
}

func (e *env) runnerConfig(pool *pgxpool.Pool, p *readmodel.Projection) projector.Config {
	return projector.Config{Brokers: e.brokers, Topic: e.topic, Projection: p, Pool: pool,
		GroupID: fmt.Sprintf("bench.%s.%d", p.Name(), time.Now().UnixNano())}
}

// replay: the whole log into an empty read model, e.c.runs times (the median run
// counts), then checked against an independent fold and set against the baselines.
func (e *env) replay(ctx context.Context) (Replay, []Point, error) {
	rp := Replay{Events: sum(e.ends)}
	var series [][]Point
	var sums []string
	var last *pgxpool.Pool // the last run's read model: checked against the fold, and copied for the COPY baseline
	defer func() {
		if last != nil {
			e.drop(ctx, last)
		}
	}()
	for i := range e.c.runs {
		pool, err := e.database(ctx, "replay")
		if err != nil {
			return rp, nil, err
		}
		pts, err := e.replayRun(ctx, i, pool, &rp)
		var sum string
		if err == nil {
			series = append(series, pts)
			sum, err = readModelSum(ctx, pool)
			sums = append(sums, sum)
		}
		// Each run but the last leaves its read model's checksum and drops its
		// database before the next run starts (drop).
		if err != nil || i < e.c.runs-1 {
			e.drop(ctx, pool)
		} else {
			last = pool
		}
		if err != nil {
			return rp, nil, err
		}
	}
	rp.Seconds = median(rp.Runs)
	rp.EventsPerSec = float64(rp.Events) / rp.Seconds
	med := 0
	for i, s := range rp.Runs {
		if s == rp.Seconds {
			med = i
		}
	}
	rp.BusyCores = rp.RunsBusyCores[med]
	// The last run is checked against the fold, and the others against it by their
	// checksums. The bootstrap's snapshot is made beside the check: neither is timed.
	snapped := e.startSnapshot(ctx)
	err := e.verifyReplay(ctx, last)
	if serr := snapped(); err == nil {
		err = serr
	}
	if err != nil {
		return rp, nil, err
	}
	for i, s := range sums {
		if s != sums[len(sums)-1] {
			return rp, nil, fmt.Errorf("replay run %d's read model (checksum %s) differs from run %d's (%s), which equals the fold", i+1, s, len(sums), sums[len(sums)-1])
		}
	}
	rp.Verified = true
	e.foldSum = sums[len(sums)-1]
	if err := e.replayBaselines(ctx, last, &rp); err != nil {
		return rp, nil, err
	}
	rp.RatioToCopy = rp.EventsPerSec / rp.CopyRowsPerSec
	rp.RatioToNaive = rp.EventsPerSec / rp.NaiveEventsPerSec
	rp.RatioToRawConsume = rp.EventsPerSec / rp.RawConsumePerSec
	return rp, series[med], nil
}

// readModelSum is a checksum of the example's read model in pool: each table's row
// count and the sum of its rows' 64-bit hashes, which does not depend on the rows'
// order. Two runs over the same log must give the same.
func readModelSum(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var out []string
	for _, t := range []string{"users", "articles"} {
		var n int64
		var h string
		if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM users_v1.`+t+` t`).Scan(&n, &h); err != nil {
			return "", fmt.Errorf("checksum of %s: %w", t, err)
		}
		out = append(out, fmt.Sprintf("%s %d/%s", t, n, h))
	}
	return strings.Join(out, ", "), nil
}

// replayRun is replay's run i into pool: its time and peak RSS go into rp, and it
// returns the rate sampled every half second. The first run is CPU-profiled, and
// heap-profiled halfway, when asked.
func (e *env) replayRun(ctx context.Context, i int, pool *pgxpool.Pool, rp *Replay) ([]Point, error) {
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return nil, err
	}
	// The runner runs under the service's memory limit; the bench's own work (the
	// fold it checks against holds the whole read model) does not.
	limit, err := cli.ApplyMemoryLimit(e.c.memoryLimit, "", "--memory-limit", "")
	if err != nil {
		return nil, err
	}
	defer debug.SetMemoryLimit(math.MaxInt64)
	runtime.GC()
	resetPeakRSS()
	logf("replay run %d: RSS before the runner starts %.0f MB (the bench's own); memory limit %s", i+1, rssMB(), limit)
	if i == 0 && e.c.cpuProfile != "" {
		f, err := os.Create(e.c.cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	heap := newHeapWatch(i == 0 && e.c.memProfile != "", e.c.memProfile, sum(e.ends)/2)
	cpuStart := cpuSeconds()
	runStart := time.Now()
	var pts []Point
	var lastT time.Duration
	var lastN int64
	cfg := e.runnerConfig(pool, p)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	took, err := runUntil(ctx, cfg, e.ends, func(t time.Duration, n int64) {
		heap.sample(n)
		if t-lastT >= 500*time.Millisecond {
			pts = append(pts, Point{Seconds: t.Seconds(), EventsPerSec: float64(n-lastN) / (t - lastT).Seconds()})
			lastT, lastN = t, n
		}
	})
	if i == 0 && e.c.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return nil, err
	}
	if err := heap.err; err != nil {
		return nil, err
	}
	rp.PeakRSSMB = max(rp.PeakRSSMB, peakRSSMB())
	rp.Runs = append(rp.Runs, took.took.Seconds())
	rp.RunsBusyCores = append(rp.RunsBusyCores, took.busy)
	logf("replay run %d: %.1f s (%.0f events/s), peak RSS %.0f MB, Go heap: peak in use %.0f MB, peak obtained from the OS %.0f MB, CPU %.1f s, machine busy %.2f cores, %d batches",
		i+1, took.took.Seconds(), float64(rp.Events)/took.took.Seconds(), peakRSSMB(), heap.peakInuse/(1<<20), heap.peakSys/(1<<20), cpuSeconds()-cpuStart, rp.RunsBusyCores[i], batches(reg))
	e.mark(fmt.Sprintf("replay: run %d (setup, replay)", i+1), runStart)
	return pts, nil
}

// heapWatch follows the Go heap during a replay run (sampled every 100 ms, with the
// progress) and writes a heap profile once the run got to at events, when asked.
type heapWatch struct {
	profile            bool
	path               string
	at                 int64
	peakInuse, peakSys float64
	err                error
}

func newHeapWatch(profile bool, path string, at int64) *heapWatch {
	return &heapWatch{profile: profile, path: path, at: at}
}

// sample reads the heap's figures; past the run's halfway mark it writes the
// profile, once.
func (h *heapWatch) sample(done int64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.peakInuse = max(h.peakInuse, float64(ms.HeapInuse))
	h.peakSys = max(h.peakSys, float64(ms.HeapSys-ms.HeapReleased))
	if !h.profile || done < h.at {
		return
	}
	h.profile = false
	f, err := os.Create(h.path)
	if err != nil {
		h.err = err
		return
	}
	// The profile is as of the last GC: live data, not garbage not yet collected.
	h.err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
	logf("heap profile at %d events: %s", done, h.path)
}

// verifyReplay checks, after the timed part, that the read model in pool equals an
// independent fold of the log.
func (e *env) verifyReplay(ctx context.Context, pool *pgxpool.Pool) error {
	t := time.Now()
	want, err := e.logFold(ctx)
	if err != nil {
		return err
	}
	got, err := domain.Load(ctx, pool, "users_v1")
	if err != nil {
		return err
	}
	if d := domain.Diff(want, got, 3); d != "" {
		return fmt.Errorf("the replayed read model differs from the fold: %s", d)
	}
	e.mark("replay: read the log, fold, compare", t)
	return nil
}

// replayBaselines measures what replay is set against: raw consumption, COPY into
// the read model in pool, and a naive consumer.
func (e *env) replayBaselines(ctx context.Context, pool *pgxpool.Pool, rp *Replay) error {
	// The raw consumption and COPY baselines run --runs times, like the replay, and
	// their medians count: one COPY of the read model takes 3-4 s here, and single
	// ones ranged 50-79k rows/s within an hour.
	t := time.Now()
	var err error
	same := func(x float64) float64 { return x }
	if rp.RawConsumePerSec, _, err = medianRun(e.c.runs, func(int) (float64, error) { return e.rawConsume(ctx) }, same); err != nil {
		return err
	}
	e.mark("replay: raw consumption baseline", t)
	t = time.Now()
	rp.CopyRowsPerSec, rp.CopyRuns, err = medianRun(e.c.runs, func(int) (perSec float64, err error) {
		rp.CopyRows, perSec, err = e.copyCeiling(ctx, pool)
		return perSec, err
	}, same)
	if err != nil {
		return err
	}
	e.mark("replay: COPY baseline", t)
	t = time.Now()
	rp.NaiveSample = int64(min(e.c.naiveSample, int(rp.Events)))
	if rp.NaiveEventsPerSec, err = e.naive(ctx, int(rp.NaiveSample)); err != nil {
		return err
	}
	e.mark("replay: naive consumer baseline", t)
	return nil
}

// logFold is the independent fold of the whole bench log, computed once (reading
// and folding a million events takes about a minute here) for every check.
func (e *env) logFold(ctx context.Context) (domain.State, error) {
	if e.fold != nil {
		return *e.fold, nil
	}
	evs, err := e.readLog(ctx, e.topic, nil)
	if err != nil {
		return domain.State{}, err
	}
	want, err := domain.Fold(domain.Registry(), evs)
	if err != nil {
		return domain.State{}, err
	}
	e.fold = &want
	return want, nil
}

func sum(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// readLog reads (and decodes) the topic, up to upTo when given: the partitions
// at once, each in its order, one partition after the other in the result.
func (e *env) readLog(ctx context.Context, topic string, upTo map[int]int64) ([]events.Event, error) {
	var mu sync.Mutex
	parts := map[int][]events.Event{}
	err := e.eachPartition(ctx, topic, upTo, func(part int, m kafka.Message) {
		if ev, err := eventlog.FromMessage(m); err == nil {
			mu.Lock()
			parts[part] = append(parts[part], ev)
			mu.Unlock()
		}
	})
	var out []events.Event
	for _, part := range slices.Sorted(maps.Keys(parts)) {
		out = append(out, parts[part]...)
	}
	return out, err
}

// eachPartition reads every partition from its start to its end (or upTo), all at
// once, calling fn for each message, in order within a partition.
func (e *env) eachPartition(ctx context.Context, topic string, upTo map[int]int64, fn func(part int, m kafka.Message)) error {
	starts, err := admin.LogStarts(ctx, e.brokers, topic)
	if err != nil {
		return err
	}
	ends, err := e.endOffsets(ctx, topic)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for part, end := range ends {
		if upTo != nil {
			end = min(end, upTo[part])
		}
		if end <= starts[part] {
			continue
		}
		g.Go(func() error {
			return e.readPartition(gctx, topic, part, starts[part], end, func(m kafka.Message) { fn(part, m) })
		})
	}
	return g.Wait()
}

// readPartition calls fn for each message of a partition from start up to end, over
// a reader it closes.
func (e *env) readPartition(ctx context.Context, topic string, part int, start, end int64, fn func(kafka.Message)) error {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.brokers, Topic: topic, Partition: part, MaxBytes: 16 << 20,
		MaxWait: 100 * time.Millisecond, QueueCapacity: 5000})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(start); err != nil {
		return err
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return err
		}
		fn(m)
		if m.Offset >= end-1 {
			return nil
		}
	}
}

// rawConsume is the ceiling of reading: kafka-go partition readers, all partitions at
// once, discarding the messages.
func (e *env) rawConsume(ctx context.Context) (float64, error) {
	start := time.Now()
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(e.ends))
	for part, end := range e.ends {
		if end == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.brokers, Topic: e.topic, Partition: part, MaxBytes: 16 << 20,
				MaxWait: 100 * time.Millisecond, QueueCapacity: 5000})
			defer func() { _ = r.Close() }()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					errs <- err
					return
				}
				n.Add(1)
				if m.Offset >= end-1 {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// copyCeiling copies the replayed read model's final rows into fresh tables of the
// same definition with COPY: the ceiling of writing those rows.
func (e *env) copyCeiling(ctx context.Context, src *pgxpool.Pool) (int64, float64, error) {
	dst, err := e.database(ctx, "copy")
	if err != nil {
		return 0, 0, err
	}
	defer e.drop(ctx, dst)
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return 0, 0, err
	}
	if err := readmodel.Setup(ctx, dst, "projector", p); err != nil {
		return 0, 0, err
	}
	var rows int64
	var took time.Duration
	for _, t := range []string{"users", "articles"} {
		var buf strings.Builder
		sc, err := src.Acquire(ctx)
		if err != nil {
			return 0, 0, err
		}
		_, err = sc.Conn().PgConn().CopyTo(ctx, &stringWriter{&buf}, "COPY users_v1."+t+" TO STDOUT (FORMAT binary)")
		sc.Release()
		if err != nil {
			return 0, 0, err
		}
		dc, err := dst.Acquire(ctx)
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		tag, err := dc.Conn().PgConn().CopyFrom(ctx, strings.NewReader(buf.String()), "COPY users_v1."+t+" FROM STDIN (FORMAT binary)")
		took += time.Since(start)
		dc.Release()
		if err != nil {
			return 0, 0, err
		}
		rows += tag.RowsAffected()
	}
	return rows, float64(rows) / took.Seconds(), nil
}

type stringWriter struct{ b *strings.Builder }

func (w *stringWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

// naive is what a user would write by hand: a group reader, one upsert per event in
// autocommit, a Kafka commit per message (ReadMessage), into the same tables.
func (e *env) naive(ctx context.Context, n int) (float64, error) {
	pool, err := e.database(ctx, "naive")
	if err != nil {
		return 0, err
	}
	defer e.drop(ctx, pool)
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return 0, err
	}
	if err := readmodel.Setup(ctx, pool, "projector", p); err != nil {
		return 0, err
	}
	reg := domain.Registry()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.brokers, Topic: e.topic, GroupID: fmt.Sprintf("bench.naive.%d", time.Now().UnixNano()),
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	start := time.Now()
	for i := 0; i < n; i++ {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return 0, err
		}
		ev, err := eventlog.FromMessage(m)
		if err != nil {
			continue
		}
		d, err := reg.Decode(ev)
		if err != nil {
			continue
		}
		if err := naiveApply(ctx, pool, ev, d); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func naiveApply(ctx context.Context, pool *pgxpool.Pool, ev events.Event, d events.Decoded) error {
	var err error
	switch v := d.Value.(type) {
	case domain.UserRegistered:
		_, err = pool.Exec(ctx, `INSERT INTO users_v1.users (user_id, email, name, registered_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name`, v.UserID, v.Email, v.Name, ev.Time)
	case domain.UserChangedPassword:
		_, err = pool.Exec(ctx, `UPDATE users_v1.users SET password_changed_at = $2 WHERE user_id = $1`, v.UserID, ev.Time)
	case domain.UserPublishedAnArticle:
		_, err = pool.Exec(ctx, `INSERT INTO users_v1.articles VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			v.ArticleID, v.UserID, v.Title, v.Body, ev.Time)
		if err == nil {
			_, err = pool.Exec(ctx, `UPDATE users_v1.users SET article_count = article_count + 1 WHERE user_id = $1`, v.UserID)
		}
	case domain.ArticleDeleted:
		_, err = pool.Exec(ctx, `DELETE FROM users_v1.articles WHERE article_id = $1`, v.ArticleID)
	case domain.UserDeleted:
		_, err = pool.Exec(ctx, `DELETE FROM users_v1.users WHERE user_id = $1`, v.UserID)
	}
	return err
}

// liveRuns runs the live scenario and its floor e.c.runs times each, and returns
// the projector's median run (by its p99), with the floor's median run in it.
func (e *env) liveRuns(ctx context.Context) (Live, error) {
	var floors []Live
	l, runs, err := medianRun(e.c.runs, func(i int) (Live, error) {
		l, f, err := e.liveRun(ctx, i)
		floors = append(floors, f)
		return l, err
	}, func(l Live) float64 { return l.P99MS })
	if err != nil {
		return l, err
	}
	l.RunsP99 = runs
	floor, floorRuns, _ := medianRun(len(floors), func(i int) (Live, error) { return floors[i], nil }, func(l Live) float64 { return l.P99MS })
	floor.RunsP99 = floorRuns
	l.Floor = &floor
	if floor.P99MS > 0 {
		l.RatioToFloor = l.P99MS / floor.P99MS
	}
	return l, nil
}

// liveRun runs the live scenario twice, the projector's and its floor's
// (livefloor.go), one after the other in an order that alternates with i: the
// first live run after the scenarios before it was often the slowest, and neither
// should take that run every time.
func (e *env) liveRun(ctx context.Context, i int) (l, floor Live, err error) {
	for k := range 2 {
		if (k+i)%2 == 0 {
			l, err = e.live(ctx, "projector", e.startLiveRunner)
		} else {
			floor, err = e.live(ctx, "floor", e.startLiveFloor)
		}
		if err != nil {
			return l, floor, err
		}
	}
	return l, floor, nil
}

// live: a consumer started by consume (the projector, or the floor); steady traffic;
// the time from each event's acknowledgement to its row being visible.
func (e *env) live(ctx context.Context, who string, consume func(ctx context.Context, topic string, pool *pgxpool.Pool) (func(), error)) (Live, error) {
	l := Live{Rate: e.c.liveRate, Seconds: e.c.liveSeconds}
	topic := fmt.Sprintf("bench.live.%d", time.Now().UnixNano())
	if _, err := e.kafka.EnsureTopic(ctx, eventlog.TopicConfig{Name: topic, Partitions: e.c.partitions}); err != nil {
		return l, err
	}
	defer func() {
		_, _ = e.kafka.Kafka().DeleteTopics(context.WithoutCancel(ctx), &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	}()
	pool, err := e.database(ctx, "live")
	if err != nil {
		return l, err
	}
	defer e.drop(ctx, pool)
	// The scenarios before this one (a replay writes gigabytes) leave PostgreSQL in a
	// checkpoint spread over the next half minute or more, whose writes and final
	// fsync would land in this one's 30 seconds: seen, a p99 of 94 ms in the full
	// run against 23–25 ms for this scenario alone. Finishing it first measures the
	// projector's latency, not the previous scenario's leftovers.
	// A role that may not (CHECKPOINT needs a superuser or pg_checkpoint) measures
	// without, and the log says so.
	if _, err := e.admin.Exec(ctx, "CHECKPOINT"); err != nil {
		logf("live: no checkpoint before the scenario (%v): the previous scenarios' writes may land in it", err)
	}
	stopRunner, err := consume(ctx, topic, pool)
	if err != nil {
		return l, err
	}
	defer stopRunner()
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: e.brokers, Topic: topic})
	if err != nil {
		return l, err
	}
	defer func() { _ = pub.Close() }()
	w := &visibility{acked: map[string]time.Time{}}
	stop := make(chan struct{})
	pollerDone := make(chan struct{})
	go func() { defer close(pollerDone); w.watch(ctx, pool, stop) }()
	traffic := startStopwatch()
	if err := e.publishLive(ctx, pub, w); err != nil {
		close(stop) // the poller ends before the pool it reads is dropped
		<-pollerDone
		return l, err
	}
	l.BusyCores = traffic.stop().busy // through the traffic, not the wait for its last rows
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if w.left() == 0 {
			break
		}
	}
	close(stop)
	<-pollerDone
	var lat, start, steady []float64
	for _, s := range w.seen {
		lat = append(lat, s.ms)
		if s.acked.Sub(w.first) < liveStartSeconds*time.Second {
			start = append(start, s.ms)
		} else {
			steady = append(steady, s.ms)
		}
	}
	sort.Float64s(lat)
	l.Events = len(lat)
	if len(lat) > 0 {
		l.P50MS, l.P99MS, l.MaxMS = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	l.StartP99MS, l.SteadyP99MS = p99(start), p99(steady)
	logf("live, %s: p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d events; p99 of the first %d s %.1f ms, of the rest %.1f ms; machine busy %.2f cores",
		who, l.P50MS, l.P99MS, l.MaxMS, l.Events, liveStartSeconds, l.StartP99MS, l.SteadyP99MS, l.BusyCores)
	return l, nil
}

// startLiveRunner starts live's projector on topic, into pool, and waits until it has
// joined its group and holds partitions, then a second more; stop ends it and waits.
func (e *env) startLiveRunner(ctx context.Context, topic string, pool *pgxpool.Pool) (stop func(), err error) {
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return nil, err
	}
	// The service's defaults, BatchTimeout among them (docs/operations.md, A batch's
	// commit): a batch timeout of 2 ms, which this scenario used to set, made a
	// transaction of every one to four events and both cores busy at 2,000 events/s,
	// and its p99 was higher and far noisier than the default's.
	r, err := projector.New(projector.Config{Brokers: e.brokers, Topic: topic, Projection: p, Pool: pool,
		GroupID: "bench.live." + topic})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			logf("live projector: %v", err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for !r.Status().Joined || len(r.Status().Partitions) == 0 {
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("the live projector did not join")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	return stop, nil
}

// publishLive sends e.c.liveRate events a second for e.c.liveSeconds, each a new
// user, and tells w when each is acknowledged.
func (e *env) publishLive(ctx context.Context, pub *eventlog.Publisher, w *visibility) error {
	reg := domain.Registry()
	interval := time.Second / time.Duration(e.c.liveRate)
	next := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	total := e.c.liveRate * e.c.liveSeconds
	for i := 0; i < total; i++ {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		id := fmt.Sprintf("live-%d", i)
		ev, err := reg.New("bench", id, domain.UserRegistered{UserID: id, Email: id + "@bench.test", Name: "Live"}, events.WithSequence(1))
		if err != nil {
			return err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() { // single events, each acknowledged on its own, as a service would send them
			defer func() { <-sem; wg.Done() }()
			if _, err := pub.Publish(ctx, ev); err == nil {
				w.acknowledged(ev.Subject)
			}
		}()
	}
	wg.Wait()
	return nil
}

// liveStartSeconds is the start of live's traffic whose p99 the bench also reports
// apart: a fresh service's tables fill from empty then, with no statistics yet.
const liveStartSeconds = 3

// p99 is the 99th percentile of v (sorted in place), 0 if empty.
func p99(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)*99/100]
}

// visibility measures live's latency: from each user's acknowledgement to its row
// being visible in the read model.
type visibility struct {
	mu    sync.Mutex
	acked map[string]time.Time // acknowledged users not seen yet
	first time.Time            // the first acknowledgement
	seen  []sample             // per user seen
}

// sample is one user's latency, and when it was acknowledged.
type sample struct {
	acked time.Time
	ms    float64
}

func (w *visibility) acknowledged(id string) {
	w.mu.Lock()
	now := time.Now()
	if w.first.IsZero() || now.Before(w.first) {
		w.first = now
	}
	w.acked[id] = now
	w.mu.Unlock()
}

// left is how many acknowledged users are not visible yet.
func (w *visibility) left() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// watch looks every 2 ms which acknowledged users are visible now, until stop closes.
func (w *visibility) watch(ctx context.Context, pool *pgxpool.Pool, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.acked))
		for id := range w.acked {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		w.see(ctx, pool, ids)
	}
}

// see records the users of ids whose rows are visible now, at the time its query
// returns (late by the query's time, never early).
//
// Each id is one probe of the primary key, whatever the statistics, as the
// framework's mark lookups do (internal/store, loadAggregatesSQL). Written as
// `user_id = ANY($1)`, the prepared query took a plan from its first executions on
// the new, empty table: a scan of the whole table with the ids as a filter. pgx
// keeps the statement prepared, so that plan stayed until the runner's first
// ANALYZE, while the table grew by 2,000 rows a second: seen in PostgreSQL's log
// (auto_explain), 15–38 ms per look in the traffic's second second, every such
// look adding its time to the latencies it found, and taking a core's share from
// the projector it measures.
func (w *visibility) see(ctx context.Context, pool *pgxpool.Pool, ids []string) {
	rows, err := pool.Query(ctx, `SELECT m.user_id FROM unnest($1::text[]) AS k(id)
		CROSS JOIN LATERAL (SELECT u.user_id FROM users_v1.users AS u WHERE u.user_id = k.id LIMIT 1) AS m`, ids)
	if err != nil {
		return
	}
	seen := time.Now()
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			w.mu.Lock()
			if t, ok := w.acked[id]; ok {
				w.seen = append(w.seen, sample{acked: t, ms: float64(seen.Sub(t).Microseconds()) / 1000})
				delete(w.acked, id)
			}
			w.mu.Unlock()
		}
	}
	rows.Close()
}

// effects: a no-op effect on every event type over the first N events of the log.
func (e *env) effects(ctx context.Context) (Effects, error) {
	var fx Effects
	opts, err := redis.ParseURL(e.c.redisURL)
	if err != nil {
		return fx, err
	}
	rc := redis.NewClient(opts)
	defer func() { _ = rc.Close() }()
	ns := fmt.Sprintf("bench%d", time.Now().UnixNano())
	defer func() { // the run's keys, a page of the scan at a time (one at a time took 10–15 s)
		cctx := context.WithoutCancel(ctx)
		for cursor := uint64(0); ; {
			keys, next, err := rc.Scan(cctx, cursor, ns+":*", 5000).Result()
			if err != nil {
				logf("effects: the ledger's keys under %s stay in Redis: %v", ns, err)
				return
			}
			if len(keys) > 0 {
				if err := rc.Unlink(cctx, keys...).Err(); err != nil {
					logf("effects: the ledger's keys under %s stay in Redis: %v", ns, err)
					return
				}
			}
			if cursor = next; cursor == 0 {
				return
			}
		}
	}()
	n := e.c.effects
	if fx.SetNXBaselinePerSec, err = setNXBaseline(ctx, rc, ns, n); err != nil {
		return fx, err
	}
	var runs atomic.Int64
	eff, err := noopEffect(&runs)
	if err != nil {
		return fx, err
	}
	ledger, err := sideeffects.NewLedger(sideeffects.LedgerConfig{Client: rc, Namespace: ns})
	if err != nil {
		return fx, err
	}
	rt := roundtrips.On(rc) // from here on only the ledger uses rc
	// The first n events: a prefix of each partition, in proportion.
	at := map[int]int64{}
	total := sum(e.ends)
	for part, end := range e.ends {
		at[part] = end * int64(n) / total
	}
	fx.Events = sum(at)
	pool, err := e.database(ctx, "effects")
	if err != nil {
		return fx, err
	}
	defer e.drop(ctx, pool)
	p, err := domain.NewProjection("users", 1)
	if err != nil {
		return fx, err
	}
	cfg := e.runnerConfig(pool, p)
	cfg.StopAt, cfg.Effects, cfg.Ledger = at, []*sideeffects.Effect{eff}, ledger
	cfg.EffectHorizon = 100 * 365 * 24 * time.Hour // the generated history is old: fire for all of it
	r, err := projector.New(cfg)
	if err != nil {
		return fx, err
	}
	took, err := runEffects(ctx, r, &runs, fx.Events)
	if err != nil {
		return fx, err
	}
	secs := took.took.Seconds()
	fx.BusyCores = took.busy
	fx.PerSec = float64(fx.Events) / secs
	batches := 0.0
	for part := range at {
		batches += float64((at[part] + projector.EffectBatchSizeDefault - 1) / projector.EffectBatchSizeDefault)
	}
	fx.RedisRoundTripsPerBat = float64(rt.Load()) / max(batches, 1)
	logf("effects: %.0f runs/s, %.2f round trips per batch, machine busy %.2f cores", fx.PerSec, fx.RedisRoundTripsPerBat, fx.BusyCores)
	return fx, nil
}

// setNXBaseline is the ledger's baseline: raw pipelined SET NX of n keys under ns,
// 500 a round trip, per second.
func setNXBaseline(ctx context.Context, rc *redis.Client, ns string, n int) (float64, error) {
	start := time.Now()
	for k := 0; k < n; k += 500 {
		pipe := rc.Pipeline()
		for j := k; j < min(k+500, n); j++ {
			pipe.SetNX(ctx, fmt.Sprintf("%s:base:%d", ns, j), "x", time.Minute)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// noopEffect is an effect on every event type of the domain that only counts its
// runs in runs.
func noopEffect(runs *atomic.Int64) (*sideeffects.Effect, error) {
	eff, err := sideeffects.Define("noop", domain.Registry())
	if err != nil {
		return nil, err
	}
	sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserRegistered) error {
		runs.Add(1)
		return nil
	})
	sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserChangedPassword) error {
		runs.Add(1)
		return nil
	})
	sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserPublishedAnArticle) error {
		runs.Add(1)
		return nil
	})
	sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.ArticleDeleted) error {
		runs.Add(1)
		return nil
	})
	sideeffects.On(eff, func(context.Context, sideeffects.Run, events.Event, domain.UserDeleted) error {
		runs.Add(1)
		return nil
	})
	return eff, nil
}

// runEffects runs r until runs reaches want, and returns the span it took; it
// gives up after 10 minutes, or when the runner stops short.
func runEffects(ctx context.Context, r *projector.Runner, runs *atomic.Int64, want int64) (span, error) {
	watch := startStopwatch()
	start := watch.start
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	var runErr error
	stopped := false // the bounded run may end (every watermark at its end) before this loop looks again
	for runs.Load() < want {
		select {
		case runErr = <-done:
			stopped = true
		case <-time.After(50 * time.Millisecond):
		}
		if stopped {
			if runErr != nil || runs.Load() < want {
				cancel()
				return span{}, fmt.Errorf("runner stopped at %d of %d runs: %w", runs.Load(), want, runErr)
			}
			break
		}
		if time.Since(start) > 10*time.Minute {
			cancel()
			return span{}, errors.Join(errors.New("effects did not finish in 10 minutes"), <-done)
		}
	}
	took := watch.stop()
	cancel()
	if !stopped {
		runErr = <-done
	}
	return took, runErr
}

// resetPeakRSS resets the process's peak resident set (Linux: clear_refs 5).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0o200) }

// peakRSSMB is the process's peak resident set since the last reset.
func peakRSSMB() float64 { return procStatusMB("VmHWM:") }

// batches is the number of batches a runner registered on reg committed.
func batches(reg *prometheus.Registry) uint64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "projector_batch_seconds" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// cpuSeconds is the CPU time the process used so far, user and system.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// rssMB is the process's resident set now.
func rssMB() float64 { return procStatusMB("VmRSS:") }

// procStatusMB is the figure of /proc/self/status named field, in MB.
func procStatusMB(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

func gitCommit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func serverVersions(ctx context.Context, c config) (pg, rd string) {
	if pool, err := pgxpool.New(ctx, c.databaseURL); err == nil {
		_ = pool.QueryRow(ctx, "SHOW server_version").Scan(&pg)
		pool.Close()
	}
	if opts, err := redis.ParseURL(c.redisURL); err == nil {
		rc := redis.NewClient(opts)
		if info, err := rc.Info(ctx, "server").Result(); err == nil {
			for line := range strings.SplitSeq(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
					rd = v
				}
			}
		}
		_ = rc.Close()
	}
	return pg, rd
}
