package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/projector/projector/pkg/shred"
)

// Profile sizes the scenarios: short for CI, full by hand.
type Profile struct {
	Name   string
	Events int // events in each scenario's initial log
	Kills  int // SIGKILLs in scenario 1
	Full   bool
}

// Profiles by name.
var Profiles = map[string]Profile{
	"short": {Name: "short", Events: 12000, Kills: 6},
	"full":  {Name: "full", Events: 40000, Kills: 20, Full: true},
}

// Fresh names servers a scenario faults, so it gets its own instance of them.
type Fresh int

// Servers a scenario may need of its own.
const (
	FreshKafka Fresh = 1 << iota
	FreshPG
	FreshRedis
	FreshPGTmpfs // its PostgreSQL's data on a small tmpfs
	FreshVeth    // every server on a veth address, the projector in a network namespace
)

// Scenario is one fault and its checks.
type Scenario struct {
	N     int
	Name  string
	Fresh Fresh
	Bound func(Profile) time.Duration
	// Run injects the fault, heals it, brings the projector to lag zero and stops
	// it; it returns what the oracle should expect.
	Run func(ctx context.Context, t *T) (Expect, error)
}

// T is a running scenario: its env, profile, random source and result.
type T struct {
	*Env
	P   Profile
	Rng *rand.Rand
	R   *Result
}

// Logf logs a line of the scenario.
func (t *T) Logf(format string, a ...any) { t.Log(format, a...) }

// Result is one row of the summary.
type Result struct {
	N           int
	Name        string
	Pass        bool
	Err         string
	Checks      []Check
	Produced    int
	Acked       int
	Unknown     int
	Applied     int
	Parked      int
	Kills       int
	Resent      int
	MaxRecovery time.Duration
	Duration    time.Duration
	Notes       []string
}

// Note adds a line of evidence.
func (r *Result) Note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// Recovered records one lag-recovery time.
func (r *Result) Recovered(d time.Duration) {
	if d > r.MaxRecovery {
		r.MaxRecovery = d
	}
}

// Suite runs scenarios against private servers.
type Suite struct {
	Seed    uint64
	Profile Profile
	Dir     string
	Out     io.Writer
	Bins    Binaries
	base    Servers
	baseSup *Supervisor
	master  string
}

// keyDB is where a scenario's key store lives: the suite's base PostgreSQL, shared
// infrastructure like the log, so a scenario faulting its read model's database
// faults that database alone (a producer cannot seal personal data while its key
// store is down: that is the key store's own fault, not this scenario's). A
// projector in a network namespace reaches only the servers on its veth, so there
// the key store is the scenario's own PostgreSQL.
func keyDB(srv, base Servers, veth *Veth) *Postgres {
	if veth != nil || base.PG == nil {
		return srv.PG
	}
	return base.PG
}

// masterKey is the run's personal-data master key, made on first use.
func (s *Suite) masterKey() string {
	if s.master == "" {
		s.master = shred.NewMasterKey()
	}
	return s.master
}

// BuildBinaries builds the projector and producer into dir.
func BuildBinaries(ctx context.Context, root, dir string, race bool) (Binaries, error) {
	b := Binaries{Projector: filepath.Join(dir, "projector"), Producer: filepath.Join(dir, "producer")}
	for bin, pkg := range map[string]string{b.Projector: "./cmd/projector", b.Producer: "./cmd/producer"} {
		args := []string{"build", "-o", bin}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return b, nil
}

func (s *Suite) logf(format string, a ...any) {
	_, _ = fmt.Fprintf(s.Out, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// startServers starts the servers fresh asks for on host, taking the rest from base.
func startServers(ctx context.Context, sup *Supervisor, dir, host string, fresh Fresh, base Servers) (Servers, error) {
	s := base
	var err error
	all := fresh&FreshVeth != 0 || base.Kafka == nil
	if all || fresh&FreshKafka != 0 {
		if s.Kafka, err = StartKafka(ctx, sup, "kafka", host, filepath.Join(dir, "kafka")); err != nil {
			return s, err
		}
	}
	if all || fresh&(FreshPG|FreshPGTmpfs) != 0 {
		pgdir := filepath.Join(dir, "pg")
		if fresh&FreshPGTmpfs != 0 {
			if err := os.MkdirAll(pgdir, 0o755); err != nil {
				return s, err
			}
			if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size=384m", "tmpfs", pgdir).CombinedOutput(); err != nil {
				return s, fmt.Errorf("mount tmpfs: %w: %s", err, out)
			}
		}
		if s.PG, err = StartPostgres(ctx, sup, host, pgdir); err != nil {
			if fresh&FreshPGTmpfs != 0 {
				_ = exec.CommandContext(context.WithoutCancel(ctx), "umount", "-l", pgdir).Run()
			}
			return s, err
		}
	}
	if all || fresh&FreshRedis != 0 {
		if s.Redis, err = StartRedis(ctx, sup, host, dir); err != nil {
			return s, err
		}
	}
	if all {
		if s.Mailpit, err = StartMailpit(ctx, sup, host, dir); err != nil {
			return s, err
		}
	}
	return s, nil
}

// stopServers stops what startServers started beyond base.
func stopServers(ctx context.Context, s, base Servers, sup *Supervisor) {
	if s.PG != nil && s.PG != base.PG {
		_ = s.PG.Stop(ctx, "immediate")
		_ = exec.CommandContext(ctx, "umount", "-l", s.PG.dir).Run()
	}
	sup.Close()
}

// Run runs the scenarios and returns their results.
func (s *Suite) Run(ctx context.Context, scenarios []Scenario) []Result {
	s.baseSup = NewSupervisor(s.Dir)
	defer func() { stopServers(context.WithoutCancel(ctx), s.base, Servers{}, s.baseSup) }()
	s.logf("starting the suite's private servers (Kafka, PostgreSQL, Redis, Mailpit) on loopback")
	base, err := startServers(ctx, s.baseSup, filepath.Join(s.Dir, "base"), "127.0.0.1", 0, Servers{})
	s.base = base
	if err != nil {
		s.logf("base servers: %v", err)
		var out []Result
		for _, sc := range scenarios {
			out = append(out, Result{N: sc.N, Name: sc.Name, Err: "base servers: " + err.Error()})
		}
		return out
	}
	var out []Result
	for _, sc := range scenarios {
		out = append(out, s.runOne(ctx, sc))
	}
	return out
}

func (s *Suite) runOne(ctx context.Context, sc Scenario) (res Result) {
	res = Result{N: sc.N, Name: sc.Name}
	start := time.Now()
	bound := sc.Bound(s.Profile)
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	dir := filepath.Join(s.Dir, fmt.Sprintf("s%02d", sc.N))
	_ = os.MkdirAll(dir, 0o755)
	sup := NewSupervisor(dir)
	name := fmt.Sprintf("c%xs%02d", s.Seed&0xffffff, sc.N)
	rng := rand.New(rand.NewPCG(s.Seed, uint64(sc.N)))
	s.logf("== scenario %d: %s (bound %v, logs %s)", sc.N, sc.Name, bound, dir)
	defer func() {
		if p := recover(); p != nil {
			res.Err = fmt.Sprintf("panic: %v", p)
			res.Pass = false
		}
		res.Duration = time.Since(start).Round(time.Second)
		verdict := "PASS"
		if !res.Pass {
			verdict = "FAIL"
		}
		s.logf("== scenario %d: %s in %v %s", sc.N, verdict, res.Duration, res.Err)
	}()
	host := "127.0.0.1"
	var veth *Veth
	if sc.Fresh&FreshVeth != 0 {
		v, err := NewVeth(ctx, s.Seed, sc.N)
		if err != nil {
			res.Err = "veth: " + err.Error()
			return res
		}
		veth = v
		defer veth.Close(context.WithoutCancel(ctx))
		host = veth.HostIP
	}
	// The scenario's own servers have their own supervisor: they outlive the
	// processes under test, which end before the oracle reads the results.
	srvSup := NewSupervisor(dir)
	srv, err := startServers(ctx, srvSup, dir, host, sc.Fresh, s.base)
	defer stopServers(context.WithoutCancel(ctx), srv, s.base, srvSup)
	if err != nil {
		res.Err = "servers: " + err.Error()
		return res
	}
	env := &Env{S: srv, Sup: sup, Dir: dir, Bins: s.Bins, Topic: name, Partitions: 4, Name: name, Schema: "chaos_" + name, MasterKey: s.masterKey(), KeyDB: keyDB(srv, s.base, veth),
		Hist: &History{}, Log: func(f string, a ...any) { s.logf("   s%d: "+f, append([]any{sc.N}, a...)...) }}
	defer env.Close()
	t := &T{Env: env, P: s.Profile, Rng: rng, R: &res}
	if veth != nil {
		t.Veth = veth
	}
	if err := env.Setup(ctx); err != nil {
		res.Err = "setup: " + err.Error()
		return res
	}
	exp, err := sc.Run(ctx, t)
	sup.Close() // every projector and producer ends here, whatever happened
	if fx := srv.Kafka; fx != s.base.Kafka && !fx.Proc().Alive() {
		// A scenario that ended with its broker down: bring it back for the oracle.
		if err := fx.Start(context.WithoutCancel(ctx)); err != nil {
			res.Err = "restart kafka for the oracle: " + err.Error()
		}
	}
	if err != nil {
		res.Err = err.Error()
	}
	s.verdict(ctx, sc, env, dir, exp, &res)
	return res
}

// verdict runs the oracle over what the scenario left — even after an error, with
// its own bound: its checks are the evidence — and fills res.
func (s *Suite) verdict(ctx context.Context, sc Scenario, env *Env, dir string, exp Expect, res *Result) {
	// The oracle runs even after an error, with its own bound: its checks are the evidence.
	octx, ocancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer ocancel()
	obs, oerr := env.Observe(octx)
	if oerr != nil {
		res.Err = strings.TrimSpace(res.Err + "; observe: " + oerr.Error())
		return
	}
	writeHistory(dir, env.Hist.Attempts(), obs.Mails)
	exp.AmbiguousKeys = FailedEffectKeys(dir)
	res.Checks = Verify(env.Reg, env.Hist.Attempts(), obs, exp)
	if f, err := FoldLog(env.Reg, obs); err == nil {
		res.Applied = len(f.Applied)
		res.Resent = len(obs.Mails) - distinctCount(obs.Mails)
	}
	hc := env.Hist.Counts()
	res.Produced, res.Acked, res.Unknown = len(env.Hist.Attempts()), hc[OK], hc[Unknown]+hc[Failed]
	res.Parked = len(obs.Parked)
	res.Pass = res.Err == ""
	for _, c := range res.Checks {
		s.logf("   s%d: %s", sc.N, c)
		if !c.OK {
			res.Pass = false
		}
	}
}

func distinctCount(xs []string) int {
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return len(m)
}

// Table renders the summary as a Markdown table.
func Table(seed uint64, profile string, results []Result, total time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, profile %s, %d scenarios, %v\n\n", seed, profile, len(results), total.Round(time.Second))
	b.WriteString("| # | scenario | result | produced | acked | unknown | applied | parked | kills | re-sent | max recovery | duration |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	sort.Slice(results, func(i, j int) bool { return results[i].N < results[j].N })
	for _, r := range results {
		v := "PASS"
		if !r.Pass {
			v = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %d | %d | %d | %d | %d | %d | %d | %v | %v |\n", r.N, r.Name, v, r.Produced, r.Acked, r.Unknown,
			r.Applied, r.Parked, r.Kills, r.Resent, r.MaxRecovery.Round(100*time.Millisecond), r.Duration)
	}
	return b.String()
}

// Details renders each scenario's checks and notes.
func Details(results []Result) string {
	var b strings.Builder
	for _, r := range results {
		fmt.Fprintf(&b, "\n### %d. %s\n\n", r.N, r.Name)
		if r.Err != "" {
			fmt.Fprintf(&b, "- error: %s\n", r.Err)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		for _, c := range r.Checks {
			fmt.Fprintf(&b, "- %s\n", c)
		}
	}
	return b.String()
}

// writeHistory leaves the scenario's history beside its logs: every produce attempt
// (history.jsonl) and every delivery the sink saw, by Message-ID with its attempt
// number (deliveries.txt).
func writeHistory(dir string, attempts []Attempt, mails []string) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for _, a := range attempts {
		_ = enc.Encode(a)
	}
	_ = os.WriteFile(filepath.Join(dir, "history.jsonl"), []byte(b.String()), 0o644)
	b.Reset()
	seen := map[string]int{}
	for _, m := range mails {
		seen[m]++
		fmt.Fprintf(&b, "%s\t%d\n", m, seen[m])
	}
	_ = os.WriteFile(filepath.Join(dir, "deliveries.txt"), []byte(b.String()), 0o644)
}
