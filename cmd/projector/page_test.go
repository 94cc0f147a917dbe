package main

import (
	"context"
	"encoding/json"
	"net/http"
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
	"github.com/projector/projector/pkg/projector"
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
	// The replay commits a fold of reads at a time (every 2 s at most): the page is
	// loaded again once the stored progress has moved past what it showed.
	testenv.WaitFor(t, time.Minute, "the replay to commit more", func() bool { return f.progress() > first })
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

var (
	consumedTotal = regexp.MustCompile(`id="consumed-total">([0-9,]+)<`)
	effectRow     = regexp.MustCompile(`<tr class="effect"><td>welcome_email</td><td>([0-9,]+)</td><td>([0-9,]+)</td><td>([0-9,]+)</td>`)
)

// After a restart the page shows the stored totals — what every instance consumed,
// not this process's 0 — and, with an effect on, the effects section: the effect's
// watermark, its lag and its parked runs.
func TestStatusPageShowsStoredTotalsAndEffectsAfterARestart(t *testing.T) {
	t.Parallel()
	f := newProcFixture(t, 3)
	g, err := domain.NewGenerator(domain.GeneratorConfig{Seed: 31, Users: 100}) // history: the horizon sends no mail
	if err != nil {
		t.Fatal(err)
	}
	f.publish(g, 2000)
	fx := []string{"--effects", "welcome_email", "--redis-url", testenv.Get(t).RedisURL, "--smtp-addr", testenv.MailpitServer(t).SMTPAddr,
		"--ledger-namespace", f.projection.Name()}
	stored := func(addr string) (st projector.Status) {
		resp, err := http.Get("http://" + addr + "/status/stored")
		if err != nil {
			return st
		}
		defer func() { _ = resp.Body.Close() }()
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st
	}
	caughtUp := func(addr string) func() bool {
		return func() bool {
			st := stored(addr)
			return st.Lag == 0 && len(st.StoredEffects) == 1 && st.StoredEffects[0].Lag == 0 && len(st.Partitions) == 3
		}
	}
	addr, stop := f.runInProcess(fx...)
	testenv.WaitFor(t, 2*time.Minute, "the read model and the effect at the log end", caughtUp(addr))
	stop()

	addr, stop = f.runInProcess(fx...)
	defer stop()
	testenv.WaitFor(t, time.Minute, "the restarted instance to report the stored status", caughtUp(addr))
	st := stored(addr)
	var consumed int64
	for _, p := range st.Partitions {
		consumed += p.Consumed
	}
	e := st.StoredEffects[0]
	if consumed != 2000 || e.Effect != "welcome_email" || e.Position != 2000 || e.Parked != 0 || st.NeverRun {
		t.Fatalf("/status/stored after a restart: consumed %d, effect %+v, want 2000 consumed and the effect's watermark at 2000", consumed, e)
	}
	dom := chromium(t, "--virtual-time-budget=2500", "--dump-dom", "http://"+addr+"/")
	c, a, fxRow := consumedTotal.FindStringSubmatch(dom), appliedTotal.FindStringSubmatch(dom), effectRow.FindStringSubmatch(dom)
	if c == nil || a == nil || fxRow == nil {
		t.Fatalf("the page lacks the consumed total, the applied total or the effect's row:\n%.3000s", dom)
	}
	if c[1] != "2,000" || a[1] != "0" || fxRow[1] != "2,000" || fxRow[2] != "0" || fxRow[3] != "0" {
		t.Fatalf("the page shows consumed %s, applied %s, welcome_email watermark %s lag %s parked %s; want 2,000, 0 (this process), 2,000, 0, 0",
			c[1], a[1], fxRow[1], fxRow[2], fxRow[3])
	}
	t.Logf("after a restart the page shows consumed %s (stored), applied %s (this process), welcome_email at %s, lag %s, %s parked runs",
		c[1], a[1], fxRow[1], fxRow[2], fxRow[3])
}
