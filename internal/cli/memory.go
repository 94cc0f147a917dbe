package cli

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
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
