package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	format "github.com/ipfs/go-ipld-format"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// gateStore is a blockstore whose calls stall at points the test chooses: an
// operation whose context carries a stallPoint (newStallPoint) parks its first
// blockstore call (Has, Get or PutMany), or a later one (stallPoint.after),
// until the test releases it, and the test says then how the call ends
// (ioOutcome). Calls without a stallPoint, and the other calls of the same
// operation, pass through to next.
//
// Parking happens before next is called, so a parked call has neither read nor
// written: what it does is decided at its release.
type gateStore struct {
	next notifier.Blockstore
}

// stallPoint is where one operation parks. The test creates it, passes it in
// the operation's context, and either sends the outcome on release or cancels
// the context (ioCancel). entered is closed when the call parks.
type stallPoint struct {
	entered chan struct{}
	release chan ioOutcome // buffered: the test never waits for the call to take it
	cancel  context.CancelFunc
	after   int32        // calls of the operation to let through before the one that parks; set before use
	calls   atomic.Int32 // calls of the operation so far
}

type stallKey struct{}

// newStallPoint returns a point and a context, derived from parent, that
// carries it; cancelling the point's cancel cancels the context.
func newStallPoint(parent context.Context) (*stallPoint, context.Context) {
	ctx, cancel := context.WithCancel(parent)
	p := &stallPoint{entered: make(chan struct{}), release: make(chan ioOutcome, 1), cancel: cancel}
	return p, context.WithValue(ctx, stallKey{}, p)
}

// parked reports whether the operation's call has parked at p.
func (p *stallPoint) parked() bool {
	select {
	case <-p.entered:
		return true
	default:
		return false
	}
}

// free ends the stall with outcome o: ioCancel cancels the operation's
// context, the others are sent to the parked call.
func (p *stallPoint) free(o ioOutcome) {
	if o == ioCancel {
		p.cancel()
		return
	}
	p.release <- o
}

// errStallInjected is what a call released with ioFail or ioTorn returns,
// wrapped. It wraps faultbs.ErrInjected, so that the model's errors, which
// name that one, match.
var (
	errStallInjected = fmt.Errorf("gatestore: released to fail: %w", faultbs.ErrInjected)
	errStallTorn     = fmt.Errorf("gatestore: released to fail after the work: %w", errStallInjected)
)

// park waits at ctx's stall point, if the call is the one that parks there,
// and returns the outcome the call must have (ioPass for the others).
func park(ctx context.Context) (ioOutcome, error) {
	p, _ := ctx.Value(stallKey{}).(*stallPoint)
	if p == nil || p.calls.Add(1) != p.after+1 {
		return ioPass, nil
	}
	close(p.entered)
	select {
	case o := <-p.release:
		return o, nil
	case <-ctx.Done():
		return ioCancel, fmt.Errorf("gatestore: stalled: %w", ctx.Err())
	}
}

func (g *gateStore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	o, err := park(ctx)
	if err != nil || o == ioFail {
		return false, errors.Join(err, errOutcome(o))
	}
	ok, err := g.next.Has(ctx, c)
	if err == nil && o == ioTorn {
		return false, errStallTorn
	}
	return ok, err
}

func (g *gateStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	o, err := park(ctx)
	if err != nil || o == ioFail {
		return nil, errors.Join(err, errOutcome(o))
	}
	b, err := g.next.Get(ctx, c)
	if o == ioTorn && (err == nil || isNotFound(err)) {
		return nil, errStallTorn
	}
	return b, err
}

// PutMany released with ioTorn writes the blocks and then reports failure,
// the worst case of a torn write.
func (g *gateStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	o, err := park(ctx)
	if err != nil || o == ioFail {
		return errors.Join(err, errOutcome(o))
	}
	if err := g.next.PutMany(ctx, blks); err != nil {
		return err
	}
	if o == ioTorn {
		return errStallTorn
	}
	return nil
}

// errOutcome is the error a call released with o returns without reaching
// the next store.
func errOutcome(o ioOutcome) error {
	if o == ioFail {
		return errStallInjected
	}
	return nil
}

func isNotFound(err error) bool {
	return format.IsNotFound(err) || errors.Is(err, datastore.ErrNotFound)
}

// stallWatchdog fails the process, with every goroutine's stack, if stop is
// not called within d of real time: a stalled test must not hang the fuzzer.
// It runs outside any synctest bubble, whose clock does not advance while a
// goroutine is blocked on a mutex.
func stallWatchdog(what string, d time.Duration) (stop func()) {
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "%s: no progress in %v; goroutines:\n%s\n", what, d, buf)
		panic(what + ": watchdog: no progress in " + d.String() + " (a deadlock, or an operation blocked on a lock held across a stalled blockstore call)")
	})
	return func() { timer.Stop() }
}
