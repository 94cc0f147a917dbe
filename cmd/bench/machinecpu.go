package main

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// A scenario on a machine whose cores are all busy is bounded by the machine: the
// stack's servers (Kafka, PostgreSQL, Redis) run beside the bench, and they and the
// runner share its cores. The bench reports how many cores the whole machine kept
// busy through each timed part, so that a figure short of an absolute target says
// whether it ran out of machine or waited on something.

// machineCPU is a reading of the machine's CPU time, busy and in all, in clock
// ticks (/proc/stat's first line; Linux).
type machineCPU struct {
	busy, total uint64
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
	return parseMachineCPU(s.Text())
}

// parseMachineCPU parses /proc/stat's "cpu" line: user nice system idle iowait irq
// softirq steal guest guest_nice. Busy is all but idle and iowait; the guest times
// are counted in user and nice already, so they are left out of the total.
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

// busyCores is how many of the machine's cores were busy on average from start to
// end, the whole machine's (0 when either reading failed).
func busyCores(start, end machineCPU) float64 {
	if !start.ok || !end.ok || end.total <= start.total {
		return 0
	}
	return float64(end.busy-start.busy) / float64(end.total-start.total) * float64(runtime.NumCPU())
}
