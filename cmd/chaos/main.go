// Command chaos is the reliability suite: it starts private Kafka, PostgreSQL,
// Redis and Mailpit servers, runs the projector and producer as processes, injects
// faults (kills, freezes, restarts, network cuts, poison), records a history of
// what was produced and delivered, and checks the invariants with an oracle that
// folds the log independently of the projector. It prints a summary table and
// exits non-zero if any scenario fails.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/projector/projector/internal/chaos"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

func run() error {
	profile := flag.String("profile", "short", "short (CI, a few minutes) or full (by hand)")
	seed := flag.Uint64("seed", 0, "random seed (0: a random one, printed first)")
	only := flag.String("only", "", "comma-separated scenario numbers (default: all)")
	out := flag.String("out", "chaos/results", "folder for latest.md and the run's logs")
	race := flag.Bool("race", false, "build the binaries under test with -race")
	keep := flag.Bool("keep", false, "keep the servers' data folders (default: only the logs stay)")
	flag.Parse()
	p, ok := chaos.Profiles[*profile]
	if !ok {
		return fmt.Errorf("--profile %q: want short or full", *profile)
	}
	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) >> 16
	}
	fmt.Printf("chaos: seed %d, profile %s (rerun with SEED=%d)\n", *seed, p.Name, *seed)
	scenarios, err := selectScenarios(*only)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", fmt.Sprintf("projector-chaos-%d-", *seed))
	if err != nil {
		return err
	}
	// PostgreSQL runs as an unprivileged user under this folder.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	fmt.Printf("chaos: building the projector and producer; logs in %s\n", work)
	bins, err := chaos.BuildBinaries(ctx, root, work, *race)
	if err != nil {
		return err
	}
	start := time.Now()
	suite := &chaos.Suite{Seed: *seed, Profile: p, Dir: work, Out: os.Stdout, Bins: bins}
	results := suite.Run(ctx, scenarios)
	table := chaos.Table(*seed, p.Name, results, time.Since(start))
	fmt.Println()
	fmt.Print(table)
	if err := os.MkdirAll(*out, 0o755); err == nil {
		doc := "# Reliability suite: latest run\n\n`make chaos" + map[bool]string{true: "", false: "-short"}[p.Full] +
			" SEED=" + strconv.FormatUint(*seed, 10) + "` (" + time.Now().UTC().Format(time.RFC3339) + ")\n\n" + table + "\n## Evidence\n" + chaos.Details(results)
		path := filepath.Join(*out, "latest-"+p.Name+".md")
		if err := os.WriteFile(path, []byte(doc), 0o644); err == nil {
			fmt.Printf("\nchaos: wrote %s; logs in %s\n", path, work)
		}
	}
	if !*keep {
		pruneData(work)
	}
	failed := 0
	for _, r := range results {
		if !r.Pass {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d scenarios failed (seed %d)", failed, len(results), *seed)
	}
	fmt.Println("chaos: every scenario passed")
	return nil
}

// selectScenarios returns the scenarios --only names (comma-separated numbers),
// or all of them.
func selectScenarios(only string) ([]chaos.Scenario, error) {
	var want []int
	if only != "" {
		for _, s := range strings.Split(only, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("--only %q: %w", only, err)
			}
			want = append(want, n)
		}
	}
	var scenarios []chaos.Scenario
	for _, s := range chaos.All() {
		if len(want) == 0 || slices.Contains(want, s.N) {
			scenarios = append(scenarios, s)
		}
	}
	if len(scenarios) == 0 {
		return nil, fmt.Errorf("--only %q selects no scenario", only)
	}
	return scenarios, nil
}

// pruneData removes the servers' data (Kafka logs, PostgreSQL clusters, Mailpit
// databases) and the built binaries from a finished run, leaving the logs.
func pruneData(work string) {
	_ = filepath.WalkDir(work, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil //nolint:nilerr // best effort
		}
		if d.IsDir() && d.Name() == "data" {
			_ = os.RemoveAll(path)
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.Contains(d.Name(), ".db") || d.Name() == "projector" || d.Name() == "producer") {
			_ = os.Remove(path)
		}
		return nil
	})
}
