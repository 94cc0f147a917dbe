package doctor_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A scan's readers, connections and workers must all be gone when the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
