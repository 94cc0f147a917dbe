package main

import (
	"runtime"
	"testing"
)

func TestBusyCoresCountsAllButIdleAndIOWait(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	a := parseMachineCPU("cpu  100 0 50 800 50 0 0 0 40 0")
	b := parseMachineCPU("cpu  400 0 150 900 150 0 0 0 340 0")
	if !a.ok || !b.ok {
		t.Fatalf("parse failed: %+v %+v", a, b)
	}
	a.cpus, b.cpus = 4, 4
	// Busy grew by 400 of 600 ticks: two thirds of the machine's 4 CPUs. The guest
	// ticks (already inside user) are not counted twice.
	want := 2.0 / 3 * 4
	if got := busyCores(a, b); got < want-1e-9 || got > want+1e-9 {
		t.Fatalf("busy cores %v, want %v", got, want)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu0 1 2 3 4 5", "cpu 1 x 3 4 5"} {
		if c := parseMachineCPU(bad); c.ok {
			t.Errorf("%q parsed as %+v", bad, c)
		}
	}
	if got := busyCores(machineCPU{}, b); got != 0 {
		t.Errorf("a failed reading gave %v busy cores", got)
	}
	if got := fmtBusy(0, 2); got != "machine busy n/a" {
		t.Errorf("a failed reading prints %q", got)
	}
	for line, want := range map[string]bool{"cpu0 1 2": true, "cpu12 1": true, "cpu  1 2": false, "cpu": false, "intr 1": false} {
		if isCPULine(line) != want {
			t.Errorf("isCPULine(%q) = %v", line, !want)
		}
	}
	if runtime.GOOS == "linux" {
		got := readMachineCPU()
		if !got.ok || got.cpus < 1 {
			t.Fatalf("/proc/stat read as %+v", got)
		}
		if got.cpus < runtime.NumCPU() {
			t.Errorf("/proc/stat lists %d CPUs, fewer than the %d this process may use", got.cpus, runtime.NumCPU())
		}
	}
}
