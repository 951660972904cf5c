package swapsim

import (
	"testing"

	logging "github.com/ipfs/go-log/v2"
	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: every run must
// stop the network, the sessions and the client it started. It quiets the
// notifier's log of blockstore errors, which the runs with faults inject by
// the hundred.
func TestMain(m *testing.M) {
	if err := logging.SetLogLevel("bitswap/notifier", "fatal"); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine"))
}
