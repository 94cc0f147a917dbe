package cli

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/projector/projector/internal/poll"
)

// MemoryLimit is what --memory-limit set: the Go runtime's soft memory limit in
// bytes (0: none) and where it came from.
type MemoryLimit struct {
	Bytes  int64
	Source string // "--memory-limit", "GOMEMLIMIT" or "none"
}

// String says the limit and its source, for the start log.
func (m MemoryLimit) String() string {
	if m.Bytes == 0 {
		return "none"
	}
	return fmt.Sprintf("%d MiB (%s)", m.Bytes>>20, m.Source)
}

// ParseMemoryLimit reads a --memory-limit setting: a size in GOMEMLIMIT's syntax (a
// whole number with an optional unit B, KiB, MiB, GiB or TiB), or "off" (or 0) for no
// limit. It does not apply it (ApplyMemoryLimit does).
func ParseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	num, shift := s, uint(0)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = v, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q: want a size such as 150MiB or 1GiB (units B, KiB, MiB, GiB, TiB), or off", s)
	}
	return n << shift, nil
}

// ApplyMemoryLimit sets the Go runtime's soft memory limit from a --memory-limit
// setting (ParseMemoryLimit), unless the setting is its default def and the
// environment sets GOMEMLIMIT, which the runtime already applied and which then
// wins. name and env name the setting in the error.
func ApplyMemoryLimit(setting, def, name, env string) (MemoryLimit, error) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" && setting == def {
		return MemoryLimit{Bytes: debug.SetMemoryLimit(-1), Source: "GOMEMLIMIT"}, nil
	}
	n, err := ParseMemoryLimit(setting)
	if err != nil {
		return MemoryLimit{}, fmt.Errorf("%s (%s) %w", name, env, err)
	}
	if n == 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return MemoryLimit{Source: "none"}, nil
	}
	debug.SetMemoryLimit(n)
	return MemoryLimit{Bytes: n, Source: name}, nil
}

// WatchMemory warns when the heap's live data, as the last collection measured it,
// is over 80% of the soft memory limit: the collector then runs often to stay under
// it and takes CPU (up to half), and the process is slower with no other sign. It
// looks every interval, warns at most every ten minutes, and returns when ctx ends;
// without a limit it returns at once.
func WatchMemory(ctx context.Context, log *zap.Logger, limit MemoryLimit, every time.Duration) {
	if limit.Bytes == 0 {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var warned time.Time
	poll.Every(ctx, every, func() bool {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return true
		}
		live := int64(sample[0].Value.Uint64())
		if live*5 > limit.Bytes*4 && (warned.IsZero() || time.Since(warned) > 10*time.Minute) {
			warned = time.Now()
			log.Warn("the live heap is near the memory limit: the garbage collector runs often and takes CPU; raise --memory-limit (PROJECTOR_MEMORY_LIMIT) or lower --batch-size",
				zap.Int64("live_mib", live>>20), zap.String("limit", limit.String()))
		}
		return false
	})
}
