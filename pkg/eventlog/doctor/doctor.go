package doctor

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/events"
)

// Defaults for Config.
const (
	WindowDefault           = 8
	MaxFindingsDefault      = 1000
	ConcurrencyDefault      = 16
	FetchBytesDefault       = 4 << 20
	ProgressIntervalDefault = 200 * time.Millisecond
)

// Config says what to scan and how. The zero value of every field but Brokers and
// Topic means its default: the whole topic, every check.
type Config struct {
	Brokers []string // required: host:port of at least one broker
	Topic   string   // required

	// Registry knows the event types: those registered with personal data are
	// checked for plaintext personal fields, and Deep decodes the registered ones.
	// Nil skips both checks.
	Registry *events.Registry

	// Partitions limits the scan to these partitions (default: all).
	Partitions []int
	// From and To bound the offsets read per partition: From inclusive (default
	// the log start), To exclusive (default the end of the log when the scan
	// starts; beyond it is read as the end). Since and Until do the same by Kafka
	// record time; From excludes Since, To excludes Until.
	From, To     Offsets
	Since, Until time.Time

	// Window is how many recent event ids each aggregate remembers, so a duplicate
	// among them is reported with its other offset at once (default WindowDefault).
	Window int
	// MaxFindings bounds the findings listed per kind (default MaxFindingsDefault);
	// counts stay exact.
	MaxFindings int
	// Concurrency bounds the partitions read at once (default ConcurrencyDefault).
	Concurrency int
	// FetchBytes bounds one fetch from one partition (default FetchBytesDefault).
	FetchBytes int
	// SkipData skips the check of each record's data (valid UTF-8, no NUL, valid
	// JSON): faster, but data the decoder refuses goes unreported.
	SkipData bool
	// Deep also decodes the data of every record of a registered type into its Go
	// type (as a handler would receive it), and reports what does not decode.
	Deep bool

	// Progress, when set, is called about every ProgressInterval while the scan
	// runs, and once at the end of each pass, from a goroutine of the scan.
	Progress         func(Progress)
	ProgressInterval time.Duration // default ProgressIntervalDefault
}

// Progress says how far a scan is.
type Progress struct {
	Pass    int   // 1, or 2 while duplicates are located
	Records int64 // offsets passed in this pass
	Total   int64 // offsets in range
	Elapsed time.Duration
}

func (c Config) withDefaults() Config {
	if c.Window == 0 {
		c.Window = WindowDefault
	}
	if c.MaxFindings == 0 {
		c.MaxFindings = MaxFindingsDefault
	}
	if c.Concurrency == 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.FetchBytes == 0 {
		c.FetchBytes = FetchBytesDefault
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = ProgressIntervalDefault
	}
	return c
}

func (c Config) validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("doctor: Config.Brokers is empty")
	case c.Topic == "":
		return errors.New("doctor: Config.Topic is empty")
	case !c.From.IsZero() && !c.Since.IsZero():
		return errors.New("doctor: Config.From and Config.Since both set: give a start by offset or by time")
	case !c.To.IsZero() && !c.Until.IsZero():
		return errors.New("doctor: Config.To and Config.Until both set: give an end by offset or by time")
	case !c.Since.IsZero() && !c.Until.IsZero() && !c.Since.Before(c.Until):
		return fmt.Errorf("doctor: Config.Since %s is not before Config.Until %s", c.Since.Format(time.RFC3339), c.Until.Format(time.RFC3339))
	case c.Window < 1 || c.MaxFindings < 1 || c.Concurrency < 1 || c.FetchBytes < 1 || c.ProgressInterval < 0:
		return fmt.Errorf("doctor: Config: Window %d, MaxFindings %d, Concurrency %d, FetchBytes %d must be positive",
			c.Window, c.MaxFindings, c.Concurrency, c.FetchBytes)
	}
	for _, p := range c.Partitions {
		if p < 0 {
			return fmt.Errorf("doctor: Config.Partitions: %d is not a partition", p)
		}
	}
	return nil
}

// partRange is one partition's part of the scan.
type partRange struct {
	part       int
	from, to   int64
	fromStart  bool // from is the log start
	records    atomic.Int64
	passOffset atomic.Int64 // offsets passed in the current pass
}

// Scan reads the configured range of the topic and reports what it finds. An error
// means the scan could not be done (a broker, a bad range); problems in the log are
// in the Report.
func Scan(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	started := time.Now()
	client := eventlog.NewClient(cfg.Brokers)
	defer client.Close()
	layout, err := client.ReadLayout(ctx, cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("doctor: %w", err)
	}
	ranges, err := resolveRanges(ctx, client.Kafka(), cfg, layout.Partitions)
	if err != nil {
		return nil, fmt.Errorf("doctor: topic %s: %w", cfg.Topic, err)
	}
	var total int64
	full := true
	for _, r := range ranges {
		total += r.to - r.from
		full = full && r.fromStart
	}
	s := &scan{cfg: cfg, layout: layout, ranges: ranges, total: total, ids: newIDSet(total),
		seed: maphash.MakeSeed(), personal: personalTypes(cfg.Registry), started: started}

	checkers := make([]*checker, len(ranges))
	for i, r := range ranges {
		checkers[i] = s.newChecker(r)
	}
	err = s.pass(ctx, 1, func(i int, m *kafka.Message) { checkers[i].check(m) })
	if err != nil {
		return nil, err
	}
	rep := &Report{Topic: cfg.Topic, Partitions: layout.Partitions, Started: started.UTC(), FullHistory: full,
		Passes: 1, IDSetBytes: s.ids.bytes(), Counts: map[Kind]int64{}}
	for i, r := range ranges {
		checkers[i].finish()
		rep.Ranges = append(rep.Ranges, Range{Partition: r.part, From: r.from, To: r.to, Records: r.records.Load()})
		rep.Records += r.records.Load()
	}
	unlocated := s.merge(rep, checkers)
	if len(unlocated) > 0 {
		rep.Passes = 2
		if err := s.locate(ctx, rep, unlocated); err != nil {
			return nil, err
		}
	}
	rep.sortFindings()
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

// scan is one Scan's shared state.
type scan struct {
	cfg      Config
	layout   eventlog.Layout
	ranges   []*partRange
	total    int64
	ids      *idSet
	seed     maphash.Seed
	personal map[string]*events.PersonalData
	started  time.Time
}

func personalTypes(reg *events.Registry) map[string]*events.PersonalData {
	out := map[string]*events.PersonalData{}
	if reg == nil {
		return out
	}
	for _, t := range reg.Types() {
		if pd, ok := reg.PersonalData(t); ok {
			out[t] = &pd
		}
	}
	return out
}

// pass reads every range once, concurrently, calling fn with the range's index for
// each record, and reports progress meanwhile.
func (s *scan) pass(ctx context.Context, n int, fn func(int, *kafka.Message)) error {
	for _, r := range s.ranges {
		r.passOffset.Store(0)
	}
	stopProgress := s.reportProgress(n)
	defer stopProgress()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Concurrency)
	for i, r := range s.ranges {
		if r.to <= r.from {
			continue
		}
		g.Go(func() error {
			err := readRange(gctx, s.cfg, r, func(m *kafka.Message) { fn(i, m) })
			if err != nil {
				return fmt.Errorf("doctor: read %s partition %d: %w", s.cfg.Topic, r.part, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// reportProgress calls cfg.Progress every interval until the returned function is
// called, which reports once more and waits for the goroutine.
func (s *scan) reportProgress(pass int) func() {
	if s.cfg.Progress == nil {
		return func() {}
	}
	now := func() Progress {
		var done int64
		for _, r := range s.ranges {
			done += r.passOffset.Load()
		}
		return Progress{Pass: pass, Records: done, Total: s.total, Elapsed: time.Since(s.started)}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(max(s.cfg.ProgressInterval, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.cfg.Progress(now())
			}
		}
	})
	return func() {
		close(stop)
		wg.Wait()
		s.cfg.Progress(now())
	}
}

// readRange reads one partition from r.from to r.to over a connection to its
// leader, with the batch API, calling fn for each record.
func readRange(ctx context.Context, cfg Config, r *partRange, fn func(*kafka.Message)) error {
	conn, err := dialLeader(ctx, cfg.Brokers, cfg.Topic, r.part)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	// Cancelling the context unblocks a read in progress.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Seek(r.from, kafka.SeekAbsolute); err != nil {
		return fmt.Errorf("seek to offset %d: %w", r.from, err)
	}
	const stallLimit = 20
	stalls := 0
	for off := r.from; off < r.to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		b := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: cfg.FetchBytes, MaxWait: 500 * time.Millisecond})
		var n int64
		for {
			m, err := b.ReadMessage()
			if err != nil || m.Offset >= r.to {
				break
			}
			n++
			fn(&m)
			r.passOffset.Store(m.Offset + 1 - r.from)
		}
		if err := b.Close(); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("fetch at offset %d: %w", off, err)
		}
		r.records.Add(n)
		next := b.Offset()
		if next <= off {
			if stalls++; stalls >= stallLimit {
				return fmt.Errorf("no progress at offset %d after %d fetches (end %d)", off, stalls, r.to)
			}
		} else {
			stalls = 0
		}
		off = next
	}
	r.passOffset.Store(r.to - r.from)
	return nil
}

// dialLeader connects to the partition's leader through the first broker that
// answers.
func dialLeader(ctx context.Context, brokers []string, topic string, part int) (*kafka.Conn, error) {
	d := &kafka.Dialer{Timeout: 10 * time.Second}
	var errs []error
	for _, b := range brokers {
		conn, err := d.DialLeader(ctx, "tcp", b, topic, part)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("connect to the leader of partition %d: %w", part, errors.Join(errs...))
}

// resolveRanges turns the configuration into each partition's offsets to read.
func resolveRanges(ctx context.Context, client *kafka.Client, cfg Config, partitions int) ([]*partRange, error) {
	parts := cfg.Partitions
	if len(parts) == 0 {
		for p := range partitions {
			parts = append(parts, p)
		}
	}
	parts = slices.Clone(parts)
	slices.Sort(parts)
	parts = slices.Compact(parts)
	for _, p := range parts {
		if p >= partitions {
			return nil, fmt.Errorf("partition %d does not exist: the topic has %d (0 to %d)", p, partitions, partitions-1)
		}
	}
	for _, o := range []struct {
		name string
		o    Offsets
	}{{"from", cfg.From}, {"to", cfg.To}} {
		for p := range o.o.Of {
			if !slices.Contains(parts, p) {
				return nil, fmt.Errorf("--%s names partition %d, which is not scanned (the topic has %d partitions)", o.name, p, partitions)
			}
		}
	}
	starts, err := listOffsets(ctx, client, cfg.Topic, parts, kafka.FirstOffset)
	if err != nil {
		return nil, err
	}
	ends, err := listOffsets(ctx, client, cfg.Topic, parts, kafka.LastOffset)
	if err != nil {
		return nil, err
	}
	var since, until map[int]int64
	if !cfg.Since.IsZero() {
		if since, err = offsetsAt(ctx, client, cfg.Topic, parts, cfg.Since, ends); err != nil {
			return nil, err
		}
	}
	if !cfg.Until.IsZero() {
		if until, err = offsetsAt(ctx, client, cfg.Topic, parts, cfg.Until, ends); err != nil {
			return nil, err
		}
	}
	out := make([]*partRange, 0, len(parts))
	for _, p := range parts {
		start, end := starts[p], ends[p]
		from, to := start, end
		if n, ok := cfg.From.For(p); ok {
			switch {
			case n < start:
				return nil, fmt.Errorf("partition %d: --from %d is before the log start %d (older records were deleted)", p, n, start)
			case n > end:
				return nil, fmt.Errorf("partition %d: --from %d is past the log end %d", p, n, end)
			}
			from = n
		}
		if since != nil {
			from = max(since[p], start)
		}
		if n, ok := cfg.To.For(p); ok {
			to = min(n, end)
		}
		if until != nil {
			to = until[p]
		}
		if to < from {
			if _, ok := cfg.To.For(p); ok {
				return nil, fmt.Errorf("partition %d: --to %d is before the start %d", p, to, from)
			}
			to = from // a time range with nothing in this partition
		}
		out = append(out, &partRange{part: p, from: from, to: to, fromStart: from == start})
	}
	return out, nil
}

// listOffsets returns the first or last offset (which) of each partition.
func listOffsets(ctx context.Context, client *kafka.Client, topic string, parts []int, which int64) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.OffsetRequest{Partition: p, Timestamp: which}
	}
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("list offsets of partition %d: %w", po.Partition, po.Error)
		}
		if which == kafka.FirstOffset {
			out[po.Partition] = po.FirstOffset
		} else {
			out[po.Partition] = po.LastOffset
		}
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("list offsets: no answer for partition %d", p)
		}
	}
	return out, nil
}

// offsetsAt returns, per partition, the first offset whose record time is at or
// after t, or the end when there is none.
func offsetsAt(ctx context.Context, client *kafka.Client, topic string, parts []int, t time.Time, ends map[int]int64) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.TimeOffsetOf(p, t)
	}
	resp, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("offsets at %s: %w", t.Format(time.RFC3339), err)
	}
	out := map[int]int64{}
	for _, p := range parts {
		out[p] = ends[p]
	}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("offsets at %s of partition %d: %w", t.Format(time.RFC3339), po.Partition, po.Error)
		}
		for off := range po.Offsets {
			if off >= 0 {
				out[po.Partition] = off
			}
		}
	}
	return out, nil
}
