package bitswapcompat

import (
	"context"
	"errors"
	"fmt"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	format "github.com/ipfs/go-ipld-format"

	notifier "github.com/bitswapsync/notifier"
)

// A call whose blockstore check failed waits for the block, as boxo's
// GetBlocks asks the network for a block whose Get failed. If the block was
// in the blockstore all along, stored by a local add whose Publish came
// before the call, no Publish brings it and no peer may have it: the call
// waited until its ctx ended (the simulator's stalls under faults). So such
// a call checks its keys again, later, until a check of each either finds
// its block or finds it missing: a found block is published as a local add
// is (the Notifier's Publish with the zero peer ID; see recheckKeys for why
// not PubSub.Publish), which hands it to every call waiting
// for it in one step with their wants' end (the sessions' interests, which
// the PubSub is not handed blocks for, stay as they are, as for a block that
// a call's first check finds); a missing one is left to the Publish that
// will bring it, as the call's want is recorded by then.
//
// The tempting alternatives fail:
//   - checking again at once, in Subscribe: a failing disk fails the second
//     Get as it failed the first, and the caller, boxo's getter, waits in
//     Subscribe for it;
//   - checking only the key whose failure the Notifier reported
//     (WithFailedCheckAsMiss reports the first failed key of a call): the
//     call's other failed keys would still wait;
//   - handing a found block to the call alone: the other calls waiting for
//     it would not get it, and the Notifier's index would still hold the
//     call's want after the block came, so that a later Publish of it would
//     hand it to the call a second time.

// Delays of the re-checks: the first comes recheckFirst after the Subscribe,
// and each later one after twice the delay before, up to recheckMax.
const (
	recheckFirst = 100 * time.Millisecond
	recheckMax   = 10 * time.Second
)

// checkFailed is the PubSub's WithFailedCheckAsMiss function: the Notifier
// calls it on the goroutine of the Subscribe whose check failed, before that
// Subscribe returns, so started sees ps.missed moved. It then hands err on.
func (ps *PubSub) checkFailed(err error) {
	ps.missed.Add(1)
	if ps.onErr != nil {
		ps.onErr(err)
	}
}

// recheckLater arranges for recheck to run after d, unless c has ended (a
// completed call has ended too).
func (c *call) recheckLater(ctx context.Context, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		c.retry = time.AfterFunc(d, func() { c.recheck(ctx, d) })
	}
}

// stopRetry stops c's next re-check, if any. The caller holds c.mu and has
// just marked c ended; a re-check already running, or a timer that fires
// anyway, finds it so (beginRecheck): stopping the timer lets go of c at
// once rather than up to recheckMax later.
func (c *call) stopRetry() {
	if c.retry != nil {
		c.retry.Stop()
		c.retry = nil
	}
}

// recheck checks the keys that c still awaits, d after the check before,
// publishes the blocks found, and checks again after twice d (at most
// recheckMax) if a Get, or the store of the Publish, failed, reporting the
// failures. It runs on the timer's goroutine, so a panic of a function of
// the user (the error function, or the cancel function or block wrapper in
// the Publish) ends the program, as one in a call ended by its ctx does.
// Shutdown waits for the part of a re-check that reads the blockstore and
// publishes (recheckKeys), and a re-check does nothing once c has ended or
// Shutdown has begun. The failures are reported after that part, so that an
// error function may call Shutdown, which would otherwise wait for the
// re-check that calls it, for ever (found by review, with
// TestShutdown_FromTheErrorFuncOfARecheck); so a failure may reach the
// error function just after a Shutdown has returned.
func (c *call) recheck(ctx context.Context, d time.Duration) {
	keys, ok := c.beginRecheck()
	if !ok {
		return
	}
	errs := c.recheckKeys(ctx, keys)
	for _, err := range errs {
		report(ctx, c.ps.onErr, err)
	}
	if len(errs) > 0 {
		c.recheckLater(ctx, min(2*d, recheckMax))
	}
}

// recheckKeys is the part of recheck that ps.ending counts: it reads keys
// and publishes the blocks found, and returns the failures.
//
// The Publish is the Notifier's, not PubSub.Publish, which ends the calls
// waiting for a block whose store fails (failWaiting). A local Publish
// stores its blocks, so this one stores again blocks just read; when that
// store fails, the calls waiting for them are not the ones failWaiting is
// for (no session let go of their keys), and the failure only brings
// another re-check (found by review, with
// TestPubSub_RecheckWhoseStoreFailsKeepsTheCall).
func (c *call) recheckKeys(ctx context.Context, keys []cid.Cid) (errs []error) {
	ps := c.ps
	defer ps.endingDone()
	var found []blocks.Block
	for _, k := range keys {
		b, err := ps.bs.Get(ctx, k)
		switch {
		case err == nil:
			found = append(found, b)
		case endedBy(ctx, err):
			return nil // the call ends with its ctx
		case !format.IsNotFound(err) && !errors.Is(err, datastore.ErrNotFound):
			errs = append(errs, fmt.Errorf("bitswapcompat: check blockstore again for %s: %w", k, err))
		}
	}
	if len(found) > 0 {
		err := ps.publish(context.Background(), notifier.ResponseMessage{Blocks: found})
		if err != nil && !errors.Is(err, notifier.ErrClosed) {
			errs = append(errs, err)
		}
		ps.pace(false)
	}
	return errs
}

// beginRecheck returns the keys that c still awaits, counting the re-check
// in ps.ending, unless c has ended or Shutdown has begun.
func (c *call) beginRecheck() ([]cid.Cid, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.retry = nil
	if c.ended {
		return nil, false
	}
	ps := c.ps
	ps.mu.Lock() // c.mu, then ps.mu, as in deliver
	closed := ps.closed
	if !closed {
		ps.ending++
	}
	ps.mu.Unlock()
	if closed {
		return nil, false
	}
	keys := make([]cid.Cid, 0, c.left.n)
	for _, k := range c.keys {
		if _, ok := c.awaited(k); ok {
			keys = append(keys, k)
		}
	}
	return keys, true
}
