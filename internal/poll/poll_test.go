package poll

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every looks until fn says stop, and not before the first interval; it ends with
// ctx, reporting that fn did not stop it.
func TestEvery(t *testing.T) {
	start, looks := time.Now(), 0
	if !Every(context.Background(), 5*time.Millisecond, func() bool { looks++; return looks == 3 }) {
		t.Fatal("Every returned false though fn stopped it")
	}
	if looks != 3 || time.Since(start) < 15*time.Millisecond {
		t.Fatalf("%d looks in %v: want 3, one an interval", looks, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if Every(ctx, time.Millisecond, func() bool { return false }) {
		t.Fatal("Every returned true when ctx ended")
	}
}
