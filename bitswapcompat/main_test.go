package bitswapcompat

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/bitswapsync/notifier/internal/waitmu"
)

// TestMain fails the run if any test leaves a goroutine behind. It counts
// the waiters of the locks, which tests read (waitWaiters).
func TestMain(m *testing.M) {
	waitmu.Count()
	goleak.VerifyTestMain(m)
}
