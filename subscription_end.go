package notifier

import (
	"context"
	"slices"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/carryon"
	"github.com/bitswapsync/notifier/internal/shrink"
)

// This file holds the end of a subscription: Remove, ReleaseAll, the end of
// a slow consumer (closeSlow, left pending while another operation holds up
// one of its keys) and the ends that Close makes. See subscription.go for
// the type.

// Remove ends every want of the subscription, reports the keys nobody wants
// any more to the cancel function, and closes Messages(): the messages in the
// subscription's backlog (those its channel's buffer could not take) are
// dropped, but for the one that its goroutine may be handing to the channel
// as Remove begins, which may still reach the buffer; those in the buffer
// can still be read before the channel reports closed (as after Close). When Remove returns, Messages() is
// closed and the session ID may be reused. Remove is idempotent, safe for
// concurrent use, and blocks only for other operations on the subscription's
// shards, and for an operation whose blockstore call holds a reservation on
// one of its keys, until that call returns, and for an older operation that
// waits for one of its keys, until the call it waits for, on that key,
// returns (see doc.go). It must
// not be called from the cancel function or a delivery
// function (see WithCancelFunc and NewSubscriptionFunc).
func (s *Subscription) Remove() { s.close(nil, false) }

// ReleaseAll is Remove that also returns the keys whose last want it ended,
// as Release does. A second call, or a call after Close, returns nil. So
// does a call after any other end of s, or while one is under way: an end as
// a slow consumer (WithMaxPending), Remove, or Close. That holds even if the
// call is the one that ends s: a ReleaseAll that waits behind a busy key
// may finish an end that began before it, and then it returns nil all the
// same (review, TestReleaseAll_FinishingAPendingSlowEndReportsNothing). Of
// ends that race, the first to begin returns the keys only if it is also
// the one that ends s. The keys whose last want such an end ended are
// reported only to the cancel function; without WithCancelFunc, nobody
// learns them. A client that sends CANCELs for them uses WithCancelFunc
// (review, TestReleaseAll_AfterAnotherEndReportsNothing).
func (s *Subscription) ReleaseAll() []cid.Cid { return s.close(nil, true) }

// close closes s with err, unless it is closed already, and ends its wants,
// in one critical section over the shards of its keys: no operation sees s
// closed but still in the index, nor the wants gone while out is open
// (markClosed). It returns once s is closed, whichever call closed it, and
// its drain goroutine, if one ran, has returned, with the keys of o.freed if
// report is set.
func (s *Subscription) close(err error, report bool) []cid.Cid {
	var first bool
	if s.closeIdle(err, &first) {
		return nil
	}
	report = report && first
	n := s.n
	o := n.getOp()
	defer func() {
		// A cancel function panicked (or exited the goroutine) in another
		// subscription's pending end, which o's wait resumed as it moved its
		// mark (lockAll, Notifier.resumeWaiting), before o ended s: s is
		// ended all the same before the panic goes on, as Remove's panic
		// comes only once s is closed, and Close, going on past the panic,
		// must leave nothing open (review,
		// TestOverflow_PanicInAnEndAMovedCloseMarkResumesStillEndsTheSubscription).
		// After putOp: the closes parked on o are resumed first, and this
		// close, younger, may wait behind their marks.
		if !s.closed.Load() {
			s.close(err, false)
		}
	}()
	defer n.putOp(o)
	o.sub, o.why, o.closing = s, err, true
	defer func() { // deferred: also if the cancel function panics, drain has returned before the panic goes on
		if o.exited != nil {
			<-o.exited // drain sees s closed and returns; it needs no lock we hold
		}
	}()
	_ = n.run(context.Background(), o, &closeSteps) // cannot fail: no blockstore, no deadline
	return o.report(report)
}

// closeSlow ends s as a slow consumer, for the operation that overflowed it
// (finish, endOne), which has released its own locks. It does not wait: if
// another operation holds up a key that s wants (a reservation for a
// blockstore call, or an older waiter's mark), the close is left pending,
// marking the least key it found busy as a waiting close does, and the
// operation that holds it up finishes it when done (putOp), or the one that
// ends s's want of such a key, or that makes the holder's mark stop
// holding (op.letGo), or the holder itself if it is a waiter that moves its
// mark to another key (Notifier.markOnly, Subscription.markOne). So a Publish that overflows s returns at once, even if
// a key of s is reserved by a stalled PutMany (G6, G11). Until the end, s
// is live but drops its messages; Err, Messages() and the wants change
// together, at the end (markClosed), so Err is nil while it is pending
// (TestSlowConsumerEnd_AtomicWithItsWants). A Remove or Close of s in
// between waits behind the pending close's mark, or completes the end
// itself, as it would behind a waiting close; either way Err then reports
// ErrSlowConsumer (markClosed).
func (s *Subscription) closeSlow() {
	if s.closeIdle(ErrSlowConsumer, nil) {
		return
	}
	n := s.n
	o := n.getOp()
	o.sub, o.why, o.closing = s, ErrSlowConsumer, true
	n.attemptClose(o, nil)
}

// attemptClose is one attempt of the pending close o, holding no lock: it
// ends s, or parks o again (lockAllOrPark). Once s is ended it waits for the
// drain goroutine, as close does, and puts o back in the pool; also if the
// cancel function panics. The pending closes that o held up in turn are
// resumed then (putOp), or, with queue set, appended to it for the caller,
// Notifier.resume, to resume.
func (n *Notifier) attemptClose(o *op, queue *[]parkEntry) {
	if ok, freed := o.sub.lockAllOrPark(o, true); !ok {
		if queue == nil {
			n.resume(freed)
		} else {
			*queue = append(*queue, freed...)
		}
		return
	}
	counted := o.pending
	defer func() {
		if counted {
			n.pending.Done()
		}
	}()
	defer func() {
		if queue == nil {
			n.putOp(o)
		} else {
			*queue = append(*queue, n.recycle(o)...)
		}
	}()
	defer func() {
		if o.exited != nil {
			<-o.exited // drain sees s closed and returns; it needs no lock we hold
		}
	}()
	_ = n.run(context.Background(), o, &heldCloseSteps) // cannot fail
}

// heldCloseSteps: closeSteps for a close that holds its locks already
// (attemptClose).
var heldCloseSteps = steps{acquire: func(context.Context, *Notifier, *op) error { return nil }, commit: commitClose}

// closeIdle closes s with err, unless it is closed already, if s wants no
// key: then the close ends no want and needs no shard lock, only s.mu (it
// runs shut, as commitClose does), for a want is added only under s.mu
// and a want's end by delivery is never undone. It reports false, having
// done nothing, if s wants a key; the caller takes the general path. Like
// close, it returns once s is closed and its drain goroutine has returned.
//
// With first set (close), it also records that a close of s has begun, and
// sets *first to whether it is the first end of s to begin: s is not
// closed, no close began before, no slow-consumer end is pending
// (overflow) and Close has not begun. Only such a close may report the keys
// it ends (ReleaseAll).
func (s *Subscription) closeIdle(err error, first *bool) bool {
	s.mu.Lock()
	if first != nil {
		*first = !s.ending && !s.overflow && !s.closed.Load() && !s.n.closed.Load()
		s.ending = true
	}
	for _, e := range s.keys {
		if !e.ended.Load() {
			s.mu.Unlock()
			return false
		}
	}
	exited := s.shut(err, func(cid.Cid) { panic("notifier: closeIdle: a live want") }) // checked above, under s.mu
	s.mu.Unlock()
	if exited != nil {
		<-exited
	}
	if s.n.m != nil {
		s.n.m.refresh(s.n) // observe.go's gauges, as handedOver refreshes them
	}
	return true
}

// closeSteps: a close takes the shards of every key s wants, and s.mu, and
// ends them all in its commit.
var closeSteps = steps{acquire: acquireAll, commit: commitClose}

func acquireAll(_ context.Context, _ *Notifier, o *op) error {
	o.sub.lockAll(o)
	return nil
}

// commitClose marks s closed, ends its wants and lets it go from the
// registry. The caller holds s.mu (lockAll), which commitClose releases. If
// a drain goroutine still runs, o.exited is set to what close waits for
// once it has released its locks: drain sees s closed (markClosed closed
// out) and returns, and no close returns while a goroutine of s can still
// touch s. A drain that found the backlog empty has already let go of s
// (draining false, under s.mu) and may still be running its deferred
// signals when close returns: it sends nothing and holds nothing, and
// Close waits for it (n.drainers). Found by review.
func commitClose(n *Notifier, o *op) error {
	s := o.sub
	o.exited = s.shut(o.why, func(k cid.Cid) { s.endWant(o, k, n.shardOf(k)) })
	s.mu.Unlock()
	return nil
}

// shut is what every close of s does under s.mu: it marks s closed with err
// (unless it is closed already), calls end for each key s still wants (the
// caller holds their shard locks), forgets s's keys and lets s go from the
// registry. It returns the exited channel of s's drain goroutine, if one
// still runs, for the close to wait for once it has released its locks, or
// nil.
func (s *Subscription) shut(err error, end func(k cid.Cid)) (exited chan struct{}) {
	s.markClosed(err)
	if s.draining {
		exited = s.exited
	}
	for k, e := range s.keys {
		if !e.ended.Load() {
			end(k)
		}
	}
	s.keys, s.stale, s.keysPeak = nil, 0, shrink.Peak{} // nil: a closed subscription keeps no storage of its wants
	if !s.anon || s.listed {
		s.n.unregister(s) // NOTE: n.mu under s.mu (and shard locks, in commitClose); n.mu is a leaf
	}
	return exited
}

// lockAll takes the shard locks of every key s wants, then s.mu, at a moment
// when no other operation holds a reservation on one of those keys, nor
// waits with one of them marked having started before it. A Subscribe may
// add a key in another shard between computing the set and
// locking it; then it starts over with the larger set. That converges: keys
// are added only under their shard's lock, which lockAll holds once the set
// covers them. A busy key (reserved, or marked by an older waiter) makes it
// mark the least busy key (markIfBusy, markOne), release everything, wait
// for that key's holder, and start over, keeping its one mark, or moving it
// to another busy key, until it goes on (see Notifier.lockFree and
// Notifier.markBusy). Stale entries need no lock: an ended
// interest never comes back. Asleep, it also wakes when a want of s ends
// (op.letGo): the key it slept for may
// be one that s no longer wants.
func (s *Subscription) lockAll(o *op) { s.lockAllOrPark(o, false) }

// lockAllOrPark is lockAll, or, with park, the attempt of a pending close
// (closeSlow), which never sleeps: where lockAll would sleep, it marks a
// busy key as lockAll does, parks o on that key's claimant
// (Notifier.parkOn), releases every lock and reports false. That claimant,
// the operation that ends a want of s whose key o marked, or the one that
// makes a mark of that claimant stop holding (op.letGo), calls it again when
// done. It reports true holding what lockAll returns holding. If o's mark
// moved, it also returns freed, the pending closes parked on o, which the
// caller resumes holding no lock (see Notifier.markOnly); lockAll resumes
// them itself.
func (s *Subscription) lockAllOrPark(o *op, park bool) (ok bool, freed []parkEntry) {
	n := s.n
	for {
		s.mu.Lock()
		covered, b := s.scanWanted(o)
		first := b.claimant
		if covered && o.locked && first == nil {
			n.unmark(o)
			return true, nil
		}
		var busy, nudge chan struct{}
		freed = nil
		if first != nil {
			freed = s.markOne(o, b)
			if park {
				s.park(o, first)
				return false, freed
			}
			busy = first.wakeOnRelease()
			nudge = make(chan struct{})
			o.nudge.Store(&nudge)
		}
		s.mu.Unlock()
		if o.locked {
			n.unlock(o.locks) // only what was locked: o.more is not in it yet
			o.locked = false
		}
		o.mergeMore()
		n.resumeWaiting(o, freed)
		if busy != nil {
			n.awaitClose(busy, nudge)
			o.nudge.Store(nil)
		}
		n.lock(o.locks)
		o.locked = true
	}
}

// park parks o, the attempt of a pending close that found first holding a
// key of s up, on first, and releases s.mu and o's shard locks. Once parked,
// o is first's to resume, which may happen as soon as the shard locks are
// released: o must be left as the next attempt expects it before parkOn, and
// not touched after it.
func (s *Subscription) park(o, first *op) {
	held := slices.Clone(o.locks) // o.more is not in it yet
	o.locked = false
	o.mergeMore()
	s.n.parkOn(o, first) // under the shard locks, while first holds its key up
	s.mu.Unlock()
	s.n.unlock(held)
}

// scanWanted is one pass of lockAllOrPark over the keys s wants: it adds to
// o.more the shards of those that o.locks lacks (covered is false then) and,
// if o holds its shard locks, finds the least busy key (markIfBusy), which
// b returns with its claimant. The caller holds s.mu.
func (s *Subscription) scanWanted(o *op) (covered bool, b busyKey) {
	covered = true
	for k, e := range s.keys {
		if e.ended.Load() {
			continue
		}
		sh := s.n.shardOf(k)
		if !o.locks.Has(int(sh)) {
			o.more.Add(int(sh))
			covered = false
		} else if o.locked {
			s.markIfBusy(o, k, sh, &b)
		}
	}
	return covered, b
}

// markOne moves the one mark of o, a close, to b's key, as
// Notifier.markOnly does for the other operations. A close's o.resKeys
// holds the key it marks, and no other. The caller holds the shard locks of
// o.resKeys and of b's key.
func (s *Subscription) markOne(o *op, b busyKey) (freed []parkEntry) {
	if o.marked && s.n.shards[b.shard].idx.marked(b.key, o) {
		return nil
	}
	if o.marked {
		s.n.unmark(o)
		freed = o.takeParked()
	}
	o.resKeys = append(o.resKeys[:0], b.key)
	o.keyShards = append(o.keyShards[:0], b.shard)
	s.n.shards[b.shard].idx.addMark(b.key, o)
	o.marked = true
	return freed
}

// mergeMore adds to o.locks the shards that lockAllOrPark found it lacks.
func (o *op) mergeMore() {
	for i := o.more.Next(0); i >= 0; i = o.more.Next(i + 1) {
		o.locks.Add(i)
	}
	o.more.Clear()
}

// parkOn parks o, a pending close, on c, the claimant of the first key it
// found busy: c resumes it when done (putOp). The caller holds the shard
// lock of that key, under which c's claim holds (so c has not reached putOp
// yet), and s.mu, s being o's open subscription: the first park counts o in
// Notifier.pending before any Close can wait for it.
func (n *Notifier) parkOn(o, c *op) {
	if !o.pending {
		o.pending = true
		n.pending.Add(1)
	}
	gen := n.parkSeq.Add(1)
	o.park.Store(gen)
	c.enqueue(o, gen)
}

// resume runs again the pending closes parked, holding no lock: each either
// completes or parks on its next claimant. A stale entry (the close was
// resumed by someone else meanwhile) is skipped. If a cancel function
// panics in one, the others are resumed before the panic goes on.
//
// The closes that a resumed close held up in turn join the same queue
// (attemptClose), behind the rest. The tempting way, each completed close
// resuming its own from its putOp, nests a call of attemptClose, putOp and
// resume per close on the stack: closes can park one behind another (a
// close finds a key marked by an older parked close, claimant), and the
// resumption of a chain of M of them took M nested frames (found by review;
// TestResume_ChainOfPendingClosesDoesNotNest).
func (n *Notifier) resume(parked []parkEntry) {
	queue := parked
	carryon.Drain(&queue, func(e parkEntry) {
		if e.o.park.CompareAndSwap(e.gen, 0) {
			n.attemptClose(e.o, &queue)
		}
	})
}

// markIfBusy makes k, in shard sh, b's key, for lockAll's close o to mark
// (markOne), if another operation holds it (claimant: one that reserved it,
// or an older waiter whose mark holds) and it is less than b's key
// (busyKey). The caller holds sh's lock and s.mu.
//
// A close marks one key it finds busy, as markBusy does for the other
// operations. Marking every key that s wants, as a close first did, held up
// every operation on any of them (a Publish of a block that s wants, a
// Subscribe of one, by any subscription) for the close's whole wait,
// perhaps a stalled blockstore call on another key (G11;
// TestIO_WaitingCloseHoldsUpOnlyTheKeysItFoundBusy); so did keeping a mark
// on each key it had found busy once that key was free again.
func (s *Subscription) markIfBusy(o *op, k cid.Cid, sh int32, b *busyKey) {
	if !b.less(k) {
		return
	}
	if c := s.n.claimant(o, k, sh); c != nil {
		*b = busyKey{c, k, sh}
	}
}
