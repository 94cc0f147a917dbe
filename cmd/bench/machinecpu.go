package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// A scenario on a machine whose cores are all busy is bounded by the machine: the
// stack's servers (Kafka, PostgreSQL, Redis) run beside the bench, and they and the
// runner share its cores. The bench reports how many cores the whole machine kept
// busy through each timed part, so that a figure short of an absolute target says
// whether it ran out of machine or waited on something.

// machineCPU is a reading of the machine's CPU time, busy and in all, in clock
// ticks summed over its CPUs, and how many CPUs /proc/stat lists (Linux).
type machineCPU struct {
	busy, total uint64
	cpus        int
	ok          bool
}

// readMachineCPU reads the machine's CPU time now; ok is false where /proc/stat
// is missing or unreadable.
func readMachineCPU() machineCPU {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return machineCPU{}
	}
	c := parseMachineCPU(s.Text())
	for s.Scan() {
		if isCPULine(s.Text()) {
			c.cpus++
		}
	}
	if c.cpus == 0 {
		c.ok = false
	}
	return c
}

// isCPULine reports whether line is one CPU's line of /proc/stat ("cpu0 …").
func isCPULine(line string) bool {
	rest, ok := strings.CutPrefix(line, "cpu")
	return ok && rest != "" && rest[0] >= '0' && rest[0] <= '9'
}

// parseMachineCPU parses /proc/stat's "cpu" line, the sum over every CPU: user nice
// system idle iowait irq softirq steal guest guest_nice. Busy is all but idle and
// iowait; the guest times are counted in user and nice already, so they are left
// out of the total. Steal counts as busy: time the machine's CPUs were not ours.
func parseMachineCPU(line string) machineCPU {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return machineCPU{}
	}
	var c machineCPU
	for i, v := range f[1:min(len(f), 9)] { // up to steal
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return machineCPU{}
		}
		c.total += n
		if i != 3 && i != 4 { // idle, iowait
			c.busy += n
		}
	}
	c.ok = true
	return c
}

// busyCores is how many of the machine's CPUs were busy on average from start to
// end, the whole machine's: 0 when either reading failed (fmtBusy prints it n/a).
func busyCores(start, end machineCPU) float64 {
	if !start.ok || !end.ok || end.total <= start.total {
		return 0
	}
	return float64(end.busy-start.busy) / float64(end.total-start.total) * float64(end.cpus)
}

// machineCores is the number of CPUs the machine has, as /proc/stat lists them,
// or fallback where it cannot be read.
func machineCores(fallback int) int {
	if c := readMachineCPU(); c.ok {
		return c.cpus
	}
	return fallback
}

// fmtBusy prints a busy-cores figure of a machine with cores CPUs.
func fmtBusy(busy float64, cores int) string {
	if busy <= 0 {
		return "machine busy n/a"
	}
	return fmt.Sprintf("machine busy %.2f of %d cores", busy, cores)
}

// span is a timed part of a scenario: how long it took, and the machine's busy
// cores over exactly that time.
type span struct {
	took time.Duration
	busy float64
}

// stopwatch starts timing a span.
type stopwatch struct {
	start time.Time
	cpu   machineCPU
}

func startStopwatch() stopwatch { return stopwatch{start: time.Now(), cpu: readMachineCPU()} }

// stop ends the span now.
func (w stopwatch) stop() span {
	took := time.Since(w.start)
	return span{took: took, busy: busyCores(w.cpu, readMachineCPU())}
}
