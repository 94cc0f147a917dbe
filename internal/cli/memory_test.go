package cli

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestParseMemoryLimit(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"off": 0, "0": 0, "150MiB": 150 << 20, "1GiB": 1 << 30, "64KiB": 64 << 10, "2TiB": 2 << 40,
		"1000B": 1000, "123456": 123456, "200 MiB": 200 << 20,
	} {
		got, err := ParseMemoryLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "150MB", "-1MiB", "1.5GiB", "MiB", "9999999TiB"} {
		if _, err := ParseMemoryLimit(in); err == nil || !strings.Contains(err.Error(), "off") {
			t.Errorf("ParseMemoryLimit(%q): err = %v, want a refusal saying what is wanted", in, err)
		}
	}
}

// The limit is process-wide: these cases run in turn, not in parallel, and put it back.
func TestApplyMemoryLimitSetsTheRuntimesLimitAndLetsGOMEMLIMITWinOverTheDefault(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	t.Setenv("GOMEMLIMIT", "")
	got, err := ApplyMemoryLimit("96MiB", "128MiB", "--memory-limit", "PROJECTOR_MEMORY_LIMIT")
	if err != nil || got.Bytes != 96<<20 || got.Source != "--memory-limit" || debug.SetMemoryLimit(-1) != 96<<20 {
		t.Fatalf("explicit: %+v, %v; runtime limit %d", got, err, debug.SetMemoryLimit(-1))
	}
	if got, err = ApplyMemoryLimit("off", "128MiB", "--memory-limit", "X"); err != nil || got.Bytes != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("off: %+v, %v; runtime limit %d", got, err, debug.SetMemoryLimit(-1))
	}
	if _, err = ApplyMemoryLimit("lots", "128MiB", "--memory-limit", "PROJECTOR_MEMORY_LIMIT"); err == nil ||
		!strings.Contains(err.Error(), "--memory-limit (PROJECTOR_MEMORY_LIMIT)") {
		t.Fatalf("bad value: err = %v, want the setting named", err)
	}

	// GOMEMLIMIT in the environment (which the runtime read at start) wins over the
	// default, not over a value given.
	t.Setenv("GOMEMLIMIT", "200MiB")
	debug.SetMemoryLimit(200 << 20)
	if got, err = ApplyMemoryLimit("128MiB", "128MiB", "--memory-limit", "X"); err != nil || got.Source != "GOMEMLIMIT" || debug.SetMemoryLimit(-1) != 200<<20 {
		t.Fatalf("default under GOMEMLIMIT: %+v, %v; runtime limit %d", got, err, debug.SetMemoryLimit(-1))
	}
	if got, err = ApplyMemoryLimit("100MiB", "128MiB", "--memory-limit", "X"); err != nil || got.Source != "--memory-limit" || debug.SetMemoryLimit(-1) != 100<<20 {
		t.Fatalf("given under GOMEMLIMIT: %+v, %v; runtime limit %d", got, err, debug.SetMemoryLimit(-1))
	}
	if s := got.String(); s != "100 MiB (--memory-limit)" {
		t.Fatalf("String() = %q", s)
	}
}

// TestWatchMemoryWarnsNearTheLimit: with live data over 80% of the limit, the watch
// warns, once however often it looks; with no limit it returns at once.
func TestWatchMemoryWarnsNearTheLimit(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	keep := make([]byte, 4<<20) // live data, far over a 1 MiB limit
	runtime.GC()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	WatchMemory(ctx, zap.New(core), MemoryLimit{Bytes: 1 << 20, Source: "--memory-limit"}, 10*time.Millisecond)
	runtime.KeepAlive(keep)
	require.Equal(t, 1, logs.FilterMessageSnippet("near the memory limit").Len(), "one warning: %v", logs.All())

	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchMemory(context.Background(), zap.NewNop(), MemoryLimit{}, time.Millisecond)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchMemory without a limit did not return")
	}
}
