package bitswapcompat

// How a call ends early (its context, a failed store, Shutdown), and how an
// ended or completed call leaves the PubSub's list. Split from pubsub.go,
// which holds the rest of a call's life: the two take the PubSub's and the
// calls' locks, always a call's mu before ps.mu.

import (
	blocks "github.com/ipfs/go-block-format"

	"github.com/bitswapsync/notifier/internal/carryon"
	"github.com/bitswapsync/notifier/internal/shrink"
)

// end ends c early, unless it has already ended: it removes c from the
// Notifier and then closes ch, so that a reader who sees ch closed finds
// nothing of c left. It runs on the caller's goroutine (failWaiting runs its
// second half, finishEnd, on a goroutine of its own), never in a
// delivery. Once ended is set no delivery sends on ch, so closing it after
// releasing mu is safe. Until ch is closed, c counts in ps.ending, which
// Shutdown waits for: a Shutdown that finds c ended (by its ctx, say) must
// not return before its channel is closed. Found by review, with
// TestShutdown_WaitsForACallEndedByItsContext.
func (c *call) end() {
	if stop, ok := c.beginEnd(); ok {
		c.finishEnd(stop)
	}
}

// beginEnd is the first step of end, under c.mu: unless c has ended
// already, it marks c ended, takes it out of calls and counts it in
// ps.ending. It reports whether it did, with the stop function of c's ctx
// watch. The caller must then call finishEnd, on any goroutine.
func (c *call) beginEnd() (stop func() bool, ok bool) {
	ps := c.ps
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return nil, false
	}
	// In one step with ended, c leaves calls and is counted as ending,
	// so that a Shutdown either ends c itself or waits for this end
	// to close ch. c.mu, then ps.mu, as in deliver.
	c.ended = true
	c.stopRetry()
	ps.mu.Lock()
	delete(ps.calls, c)
	ps.calls = shrink.Fit(ps.calls, &ps.callsPeak)
	ps.ending++
	ps.mu.Unlock()
	return c.stop, true
}

// finishEnd is the rest of end: it stops c's ctx watch, removes c's
// subscription from the Notifier, which waits for any blockstore call
// holding one of c's keys, then closes ch and uncounts c.
func (c *call) finishEnd(stop func() bool) {
	ps := c.ps
	defer func() { // deferred: also if the cancel function panics in Remove, which has finished then
		close(c.ch)
		ps.endingDone()
	}()
	if stop != nil {
		stop()
	}
	if c.sub != nil {
		c.sub.Remove()
	}
}

// endingDone uncounts an end or a re-check that ps.ending counted, and
// wakes a Shutdown that waits for the last one.
func (ps *PubSub) endingDone() {
	ps.mu.Lock()
	ps.ending--
	if ps.ending == 0 && ps.closed {
		ps.ended.Broadcast()
	}
	ps.mu.Unlock()
}

// finish queues c, which a delivery has completed, for reap to remove its
// subscription. The caller holds c.mu. A list linked through the calls, not a
// slice: a slice that reap hands over is a new allocation for every call
// that completes in its Subscribe.
func (ps *PubSub) finish(c *call) {
	ps.mu.Lock()
	delete(ps.calls, c)
	ps.calls = shrink.Fit(ps.calls, &ps.callsPeak)
	c.next = ps.finished
	ps.finished = c
	ps.nfinish.Add(1)
	ps.mu.Unlock()
}

// reap removes the subscriptions of completed calls. Every method of the
// PubSub that can run a delivery calls it before returning, and so does
// PublishMessage, also when a function of the user panics in it, so a
// completed call leaves nothing in the Notifier once that method, and the
// call's own Subscribe, have returned (a call completed
// before its Subscribe returns is removed by that Subscribe; see track).
// With methods running at once, one may take over the list while another's
// call is on it: that call is gone once the taker has returned, and until
// then counts in Stats, wanting nothing. A call completed by the native API on NotifierOf (a native Subscribe that
// found the block in the blockstore, or a Publish into the Notifier itself)
// is removed by the next of these methods, or by Shutdown: until then its
// subscription, which wants nothing, stays counted in the Notifier's Stats.
func (ps *PubSub) reap() {
	if ps.nfinish.Load() == 0 {
		return
	}
	ps.mu.Lock()
	c := ps.finished
	ps.finished = nil
	ps.nfinish.Store(0)
	ps.mu.Unlock()
	for c != nil { // the list is reap's alone now: a call finishes once
		next := c.next
		c.next = nil
		c.sub.Remove()
		c = next
	}
}

// failWaiting ends the calls that wait for a block of blks, whose store has
// just failed: their channels close without it. boxo's client has already
// handed such a block to its sessions, which let go of its key and send
// CANCELs, before it publishes, so no peer sends the block again, and the
// call would wait until its ctx ended. With boxo's own PubSub the block
// reaches the call and the block service's Put then fails, returning the
// error at once; a closed channel is an error at once too (boxo's getter:
// "promise channel was closed"). Only the calls whose Subscribe began
// before the Publish did (listed: ps.log.begun then) are ended: one made
// after the failure waits as any other, as its session would ask for the
// block again (found by review, with
// TestPubSub_FailedStoreSparesACallMadeAfterIt). A call listed before,
// whose Subscribe has not returned yet (it is arming its ctx's watch), is
// ended like the others (found by review, with
// TestPubSub_FailedStoreEndsTheCallsWaitingForItsBlocks). A call that began
// before but is not listed yet (its Subscribe is under way) finds the
// failure in ps.log when track lists it, and ends there. (The first
// version looked only at the calls listed before the Publish began: a call
// whose subscription the Publish would have served, listed after, was
// spared and waited for ever. Found by the simulator under faults, with
// TestPubSub_FailedStoreEndsACallListedAfterIt.) One window is left: a call
// that begins after the Publish's snapshot but whose subscription is live
// before the Publish plans its deliveries is spared too; only the Notifier
// knows which subscriptions a failed Publish would have served.
//
// Each call is marked ended here (beginEnd), and the rest of its end, the
// removal from the Notifier and the close of its channel, runs on a
// goroutine of its own, which Shutdown waits for (ps.ending). The removal
// waits for any blockstore call that holds another key of the call, a
// stalled PutMany or Get, and the Publish whose store failed must not wait
// with it (G11): it ran on the Publish's goroutine, until a review found the
// Publish held up by a stalled store of another key
// (TestPubSub_FailedStoreDoesNotWaitForAStalledStoreOfAnotherKey). So, as
// for a call ended by its ctx (context.AfterFunc), a panic of the cancel
// function in that removal is not the caller's: it ends the program, as a
// panic on any goroutine does. (The ends ran under carryon.Each, so that
// such a panic reached the Publish's caller after every call was ended.)
func (ps *PubSub) failWaiting(blks []blocks.Block, listed uint64) {
	ps.mu.Lock()
	var calls []*call
	for c := range ps.calls {
		if c.seq <= listed {
			calls = append(calls, c)
		}
	}
	ps.log.prune()
	if ps.log.underWay() {
		// A call whose Subscribe began before the Publish and is still under
		// way is not in calls yet: track finds the failure here.
		for _, b := range blks {
			ps.log.add(b.Cid(), listed)
		}
	}
	ps.mu.Unlock()
	var ending []*call
	for _, c := range calls { // c.mu is taken before ps.mu, never under it
		c.mu.Lock()
		for _, b := range blks {
			if _, ok := c.awaited(b.Cid()); ok {
				ending = append(ending, c)
				break
			}
		}
		c.mu.Unlock()
	}
	for _, c := range ending {
		if stop, ok := c.beginEnd(); ok {
			go c.finishEnd(stop)
		}
	}
}

// Shutdown closes the channel of every call still waiting and then closes the
// Notifier, which ends the SessionInterestManager's subscriptions too when
// the two were built by New. Later Subscribe calls return a closed channel
// and Publish does nothing. Shutdown is idempotent and safe for concurrent
// use; every call returns once the PubSub is shut down. It blocks only for
// operations in progress, a re-check of a call's keys (Subscribe) included;
// no re-check begins once Shutdown has.
func (ps *PubSub) Shutdown() {
	ps.shutdown.Do(func() {
		ps.mu.Lock()
		ps.closed = true
		calls := make([]*call, 0, len(ps.calls))
		for c := range ps.calls {
			calls = append(calls, c)
		}
		ps.mu.Unlock()
		ps.endAll(calls)
	})
}

// endAll is the rest of Shutdown: it ends calls, waits for the ends in
// progress, and closes the Notifier. If the cancel function panics in an
// end, carryon.Each goes on after that call before the panic goes on, as
// in Notifier.Close: the Once counts the Shutdown as done.
func (ps *PubSub) endAll(calls []*call) {
	carryon.Each(calls, (*call).end, func() {
		// Calls that another end (a ctx's AfterFunc) had taken out of calls
		// may not have closed their channels yet, and a re-check may be
		// under way: wait for them.
		ps.mu.Lock()
		for ps.ending > 0 {
			ps.ended.Wait()
		}
		ps.mu.Unlock()
		ps.reap()
		_ = ps.n.Close() // never fails
	})
}
