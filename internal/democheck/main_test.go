package main

import (
	"strings"
	"testing"
)

// The demo's kill step counts only when the kill lands strictly between the bounds:
// at 0 (the projector had not started) or at the end it proves nothing.
func TestJudgeKillWantsAPositionStrictlyMidReplay(t *testing.T) {
	for _, c := range []struct {
		at, end int64
		ok      bool
		says    string
	}{
		{0, 103400, false, "killed at 0 of 103400 events (0.0%): not strictly between 10% and 90%"},
		{10340, 103400, false, "(10.0%): not strictly"},
		{41200, 103400, true, "killed at 41200 of 103400 events (39.8%): mid-replay"},
		{93060, 103400, false, "(90.0%): not strictly"},
		{103400, 103400, false, "(100.0%)"},
		{0, 0, false, "killed at 0 of 0 events"},
	} {
		verdict, err := judgeKill(c.at, c.end, 10, 90)
		msg := verdict
		if err != nil {
			msg = err.Error()
		}
		if (err == nil) != c.ok || !strings.Contains(msg, c.says) {
			t.Errorf("judgeKill(%d, %d): %q, %v; want ok %v and %q", c.at, c.end, verdict, err, c.ok, c.says)
		}
	}
	for _, bad := range []string{"90,10", "10", "x,90", "-1,50", "10,101"} {
		if _, _, err := parseBetween(bad); err == nil {
			t.Errorf("--between %q accepted", bad)
		}
	}
}
