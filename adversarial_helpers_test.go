package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// Helpers shared by faults_test.go and regression_test.go.

// hangTimeout bounds every wait for something that must happen: reaching it
// means the code under test hung, and fails the test instead of the run.
const hangTimeout = 30 * time.Second

// faultEnv is a Notifier on an in-memory blockstore wrapped in a fault
// injector, with its cancel calls recorded.
type faultEnv struct {
	n       *notifier.Notifier
	fbs     *faultbs.Store
	inner   blockstore.Blockstore // what fbs wraps
	cancels *recordedCancels

	missOnFailedCheck bool // n has WithFailedCheckAsMiss
}

func newFaultEnv(t *testing.T, opts ...notifier.Option) *faultEnv {
	t.Helper()
	e := &faultEnv{
		inner:   blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore())),
		cancels: &recordedCancels{},
	}
	e.fbs = faultbs.New(e.inner)
	e.n = notifier.New(e.fbs, append([]notifier.Option{notifier.WithCancelFunc(e.cancels.record)}, opts...)...)
	t.Cleanup(func() { closeOrFail(t, e.n) })
	return e
}

// stored reports whether the blockstore holds b, reading it directly.
func (e *faultEnv) stored(t *testing.T, b blocks.Block) bool {
	t.Helper()
	ok, err := e.inner.Has(context.Background(), b.Cid())
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// recordedCancels records what the cancel function receives.
type recordedCancels struct {
	mu    sync.Mutex // guards calls
	calls [][]cid.Cid
}

func (r *recordedCancels) record(keys []cid.Cid) {
	r.mu.Lock()
	r.calls = append(r.calls, keys)
	r.mu.Unlock()
}

// keys returns every key reported so far, in order.
func (r *recordedCancels) keys() []cid.Cid {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Concat(r.calls...)
}

// testBlocks returns n distinct blocks, named so that failures are readable.
func testBlocks(name string, n int) []blocks.Block {
	bs := make([]blocks.Block, n)
	for i := range bs {
		bs[i] = blocks.NewBlock(fmt.Appendf(nil, "%s %d", name, i))
	}
	return bs
}

func cidsOf(bs ...blocks.Block) []cid.Cid {
	cs := make([]cid.Cid, len(bs))
	for i, b := range bs {
		cs[i] = b.Cid()
	}
	return cs
}

// receive waits for the next message on s, failing the test if none comes.
func receive(t *testing.T, s *notifier.Subscription) notifier.ResponseMessage {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		if !ok {
			t.Fatalf("session %d: Messages() closed (Err %v), want a message", s.ID(), s.Err())
		}
		return m
	case <-time.After(hangTimeout):
		t.Fatalf("session %d: no message after %v: hung", s.ID(), hangTimeout)
	}
	panic("unreachable")
}

// quiet fails the test if s has a message ready. Messages are enqueued before
// the operation that sends them returns, so once those operations have
// returned this is exact.
func quiet(t *testing.T, s *notifier.Subscription) {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		if ok {
			t.Fatalf("session %d: unexpected message %s", s.ID(), describeMsg(m))
		}
	default:
	}
}

func describeMsg(m notifier.ResponseMessage) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{from %q blocks [", m.From)
	for _, blk := range m.Blocks {
		fmt.Fprintf(&b, " %s", blk.Cid())
	}
	fmt.Fprintf(&b, " ] haves %v donthaves %v}", m.Haves, m.DontHaves)
	return b.String()
}

// wait fails the test if done is not closed in time.
func wait(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(hangTimeout):
		t.Fatalf("%s: not done after %v: hung", what, hangTimeout)
	}
}

// checkWrapped fails the test unless err wraps target and adds context to it.
func checkWrapped(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, target)
	}
	if err == target || !strings.HasPrefix(err.Error(), "notifier: ") {
		t.Fatalf("%s: error %q is not wrapped with the notifier's context", what, err)
	}
}

// waitEntered waits for a call to stall in a faultbs.Store.
func waitEntered(t *testing.T, entered <-chan struct{}) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(hangTimeout):
		t.Fatalf("no blockstore call stalled after %v", hangTimeout)
	}
}

// closeOrFail closes n and reports an error of Close, which must never fail.
// It is safe to call off the test goroutine.
func closeOrFail(t testing.TB, n *notifier.Notifier) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
