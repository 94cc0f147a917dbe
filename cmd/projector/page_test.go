package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/domain"
	"github.com/projector/projector/internal/testenv"
)

// chromium runs Debian's headless Chromium with the flags this closed network needs.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv(testenv.EnvRequireStack) == "1" {
			t.Fatal("chromium is not installed (scripts/stack.sh up installs it)")
		}
		t.Skip("chromium is not installed (scripts/stack.sh up installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1200,760"}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}

var appliedTotal = regexp.MustCompile(`id="applied-total">([0-9,]+)<`)

// The status page, loaded in a real browser, shows the numbers moving while a replay
// runs; the screenshot goes to docs/ with PROJECTOR_UPDATE_DOCS=1.
func TestStatusPageInHeadlessChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: run without -short")
	}
	t.Parallel()
	f := newProcFixture(t, 6)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 12, Users: 2000})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 150000)
	addr, _ := f.runInProcess("--batch-size", "20")
	url := "http://" + addr + "/"
	applied := func() int64 {
		dom := chromium(t, "--virtual-time-budget=1500", "--dump-dom", url)
		m := appliedTotal.FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("the page has no applied total:\n%.2000s", dom)
		}
		n, _ := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
		return n
	}
	testenv.WaitFor(t, time.Minute, "the replay to start", func() bool { return f.progress() > 1000 })
	first := applied()
	second := applied()
	t.Logf("the page showed %d, then %d events applied", first, second)
	if first <= 0 || second <= first {
		t.Fatalf("the page's numbers did not move during the replay: %d then %d", first, second)
	}
	shot := filepath.Join(t.TempDir(), "status-page.png")
	chromium(t, "--virtual-time-budget=1500", "--screenshot="+shot, url)
	if st, err := os.Stat(shot); err != nil || st.Size() < 10000 {
		t.Fatalf("screenshot: %v", err)
	}
	if os.Getenv("PROJECTOR_UPDATE_DOCS") == "1" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status-page.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
