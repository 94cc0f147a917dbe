package eventlog_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts — a Publisher's, a Client's connection pools, a
// reader's — must be gone when the package's tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
