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
	// Busy grew by 400 of 600 ticks: two thirds of the machine's cores. The guest
	// ticks (already inside user) are not counted twice.
	want := 2.0 / 3 * float64(runtime.NumCPU())
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
	if got := readMachineCPU(); runtime.GOOS == "linux" && !got.ok {
		t.Error("/proc/stat unreadable on Linux")
	}
}
