package notifier

import (
	"testing"

	"go.uber.org/goleak"
)

// leakOpts ignores the one goroutine a dependency starts on its own: the log
// mirror that go-ipfs-blockstore's old go-log (v0.0.1) starts at init.
var leakOpts = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine"),
}

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leakOpts...) }
