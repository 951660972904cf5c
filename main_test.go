package notifier

import (
	"flag"
	"os"
	"testing"

	logging "github.com/ipfs/go-log/v2"
	"go.uber.org/goleak"

	"github.com/bitswapsync/notifier/internal/shrink"
	"github.com/bitswapsync/notifier/internal/waitmu"
)

// leakOpts ignores the one goroutine a dependency starts on its own: the log
// mirror that go-ipfs-blockstore's old go-log (v0.0.1) starts at init.
var leakOpts = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine"),
}

var smallThresholds = flag.Bool("small-thresholds", false, "run with the index's size thresholds "+
	"at their least (shrink.Floor 0, bigSubs 2), so that every map and list that gives back a burst's "+
	"storage copies itself whenever it can, and a key of three subscribers has their positions kept; "+
	"CI runs the package's tests once more with it")

var testLogLevel = flag.String("log-level", "fatal", "the level of the library's log in tests; "+
	"the tests that read the log set their own (observe_test.go)")

// TestMain fails the run if any test leaves a goroutine behind. It counts the
// waiters of the library's locks, which tests read (waitWaiters). It keeps the
// library's log quiet, so that the errors the fault tests provoke by the
// thousand do not bury a failing test's report in CI's output.
func TestMain(m *testing.M) {
	flag.Parse()
	waitmu.Count()
	if *smallThresholds {
		shrink.Floor, bigSubs = 0, 2
	}
	if err := logging.SetLogLevel("bitswap/notifier", *testLogLevel); err != nil {
		println("TestMain:", err.Error())
		os.Exit(2)
	}
	goleak.VerifyTestMain(m, leakOpts...)
}
