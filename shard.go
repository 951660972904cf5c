package notifier

import (
	"context"
	"fmt"
	"hash/maphash"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/shardset"
	"github.com/bitswapsync/notifier/internal/waitmu"
)

// This file owns the shard locks and the reservations: every Lock and Unlock
// of a shard's mutex is here or, for the one-key read path, in shard_read.go.

// shard is one lock and the part of the index it guards.
type shard struct {
	// mu guards idx. Lock order: shards in ascending index, then
	// Subscription.mu of one subscription, or of several in ascending seq,
	// then Notifier.mu.
	mu  waitmu.Mutex
	idx shardIndex // its 256 bytes of versions keep neighbouring shards' locks off one cache line
}

func (n *Notifier) shardOf(k cid.Cid) int32 {
	return int32(maphash.String(n.seed, k.KeyString()) & n.mask)
}

// read runs f on the index of k's shard under that shard's lock: the read
// calls (Wanted, Interested, AppendInterested, Subscription.Wants). It does
// not wait for reservations (see doc.go).
func (n *Notifier) read(k cid.Cid, f func(idx *shardIndex)) {
	sh := &n.shards[n.shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f(&sh.idx)
}

// lock takes the shard locks in set, in ascending order.
func (n *Notifier) lock(set shardset.Set) {
	for i := set.Next(0); i >= 0; i = set.Next(i + 1) {
		n.shards[i].mu.Lock()
	}
}

func (n *Notifier) unlock(set shardset.Set) {
	for i := set.Next(0); i >= 0; i = set.Next(i + 1) {
		n.shards[i].mu.Unlock()
	}
}

// unlockExcept releases the shard locks in set that are not in keep.
func (n *Notifier) unlockExcept(set, keep shardset.Set) {
	for i := set.Next(0); i >= 0; i = set.Next(i + 1) {
		if !keep.Has(i) {
			n.shards[i].mu.Unlock()
		}
	}
}

// barrier takes and releases every shard lock in turn: an operation that
// locked a shard before the caller's change (Close setting closed) has
// finished with it once barrier passes that shard; one that locks it later
// sees the change.
func (n *Notifier) barrier() {
	for i := range n.shards {
		n.shards[i].mu.Lock()
		n.shards[i].mu.Unlock() //nolint:staticcheck // empty critical section is the point
	}
}

// lockFree takes o's shard locks at a moment when no other operation holds a
// reservation on a key of o.resKeys that o needs, nor a mark that still
// holds on one, having started before o (needs, holds: Subscribe,
// Unsubscribe and Release pass over the keys that their change leaves as
// they are): it waits for such an operation, holding no lock, and tries
// again. With refuseClosed it returns ErrClosed, holding no lock, once the
// Notifier is closed. While it waits, ctx may end the wait.
//
// Waiting with no lock held is what keeps this free of deadlock: an operation
// that holds reservations waits only for the blockstore and for shard locks,
// which nobody holds while waiting. Marking the key it waits for is what
// keeps it from being overtaken on that key: see markBusy.
func (n *Notifier) lockFree(ctx context.Context, o *op, refuseClosed bool) error {
	for {
		n.lock(o.locks)
		if refuseClosed && n.closed.Load() {
			n.unmark(o)
			n.unlock(o.locks)
			return ErrClosed
		}
		busy, freed := n.markBusy(o)
		if busy == nil {
			n.unmark(o)
			n.touchAll(o)
			return nil
		}
		if err := n.sleep(ctx, o, busy, freed, refuseClosed); err != nil {
			return err
		}
	}
}

// sleep is lockFree's wait for busy, the channel of the operation that holds
// o up. The caller holds o's shard locks and has marked the key o waits for;
// sleep returns holding none. Once it has let the locks go, it resumes
// freed, the pending closes that were parked on o's mark on another key
// (markBusy). If the wait fails (ctx, or a subscription whose
// close began: addSleeper), it removes o's marks too; when Close begins it
// returns nil, and lockFree's next pass removes them and returns ErrClosed.
func (n *Notifier) sleep(ctx context.Context, o *op, busy chan struct{}, freed []parkEntry, refuseClosed bool) error {
	var nudge chan struct{}
	if o.dormant() {
		nudge = make(chan struct{})
		o.nudge.Store(&nudge)
	}
	if o.scope == waitUnwanted {
		if err := o.sub.addSleeper(o); err != nil {
			o.nudge.Store(nil)
			n.unmark(o)
			n.unlock(o.locks)
			n.resume(freed)
			return err
		}
	}
	n.unlock(o.locks)
	n.resumeWaiting(o, freed)
	var err error
	if o.whileWanted() {
		n.awaitClose(busy, nudge) // an Unsubscribe or Release: no deadline
	} else {
		err = n.await(ctx, busy, nudge, refuseClosed)
	}
	n.wakeUp(o, err != nil)
	return err
}

// wakeUp undoes what o set up to sleep (sleep, Subscription.lockAll): its
// nudge and its place among its subscription's sleepers; with failed, its
// wait having failed, also its mark. The caller holds no lock.
func (n *Notifier) wakeUp(o *op, failed bool) {
	o.nudge.Store(nil)
	if o.scope == waitUnwanted {
		o.sub.dropSleeper(o)
	}
	if failed {
		n.lock(o.locks)
		n.unmark(o)
		n.unlock(o.locks)
	}
}

// resumeWaiting resumes freed, the pending closes that were parked on o's
// mark on a key it no longer marks (markOnly), as o goes to sleep, holding
// no lock. So f of WithCancelFunc may run for them on o's goroutine before
// o takes effect. If it panics (or exits the goroutine), the other closes are
// resumed (Notifier.resume) and o gives up its wait as a failed one does
// (wakeUp) before the panic goes on to o's caller: else o's mark would hold
// up the operations on its key for good.
func (n *Notifier) resumeWaiting(o *op, freed []parkEntry) {
	if len(freed) == 0 {
		return
	}
	resumed := false
	defer func() {
		if !resumed {
			n.wakeUp(o, true)
		}
	}()
	n.resume(freed)
	resumed = true
}

// await waits, holding no lock, until busy or nudge (if not nil; see
// op.dormant) is closed or ctx is done, or, with refuseClosed, Close has
// begun: lockFree's next round then returns ErrClosed. Close ends the
// subscriptions one after another, and the close of one that wants a key
// reserved by a stalled blockstore call waits for that call; a Subscribe
// asleep meanwhile, of a subscription Close has not reached (or a request
// it does not know of, which it closes lazily), or a Publish, would sleep
// on until that call returned, though it can only return ErrClosed (review,
// TestRequest_WaitingSubscribeWakesWhenCloseBegins,
// TestClose_WakesASleeperBehindTheCloseOfAnotherSubscription).
func (n *Notifier) await(ctx context.Context, busy, nudge chan struct{}, refuseClosed bool) error {
	var done chan struct{}
	if refuseClosed {
		done = n.done
	}
	n.waits.Add(1)
	n.waiting.Add(1)
	defer n.waiting.Add(-1)
	select {
	case <-busy:
		return nil
	case <-nudge:
		return nil
	case <-done: // Close has begun: the next round returns ErrClosed
		return nil
	case <-ctx.Done():
		return fmt.Errorf("notifier: wait for an operation on the same keys: %w", ctx.Err())
	}
}

// awaitClose is await for a wait with no deadline, a close's and an
// Unsubscribe's or Release's: it waits, holding no lock, until busy or nudge
// is closed (see Subscription.lockAll and lockFree).
func (n *Notifier) awaitClose(busy, nudge chan struct{}) {
	n.waits.Add(1)
	n.waiting.Add(1)
	defer n.waiting.Add(-1)
	select {
	case <-busy:
	case <-nudge:
	}
}

// letGo wakes the operations asleep on o's marks, and o itself if it sleeps
// with a nudge: one of o's marks has stopped holding, as a want of o's
// subscription ended (shardIndex.wakeStaleMarks, wakeDelivered) or, for a
// Subscribe, began (shardIndex.wakeSubscribes).
// The caller holds the shard lock of that want's key. If o is a pending
// close (Subscription.closeSlow), which has no goroutine to nudge, by, the
// operation that ended or began the want, running letGo on its own
// goroutine, lists o to resume it when it is done (putOp), as o's claimant
// will: the first of them resumes it (parkEntry). Without that, a pending
// close whose wait for a key is over would wait on for its claimant, perhaps
// an older waiter behind a stalled blockstore call on a key its subscription
// never wanted (G11). by takes over the pending closes parked on o too, for
// the same reason: a parked close is no sleeper, and wakeWaiters does not
// wake it. Without that, one parked on o, as the claimant of a key by the
// mark that just stopped holding, waited for o to go on (review,
// TestOverflow_PendingEndGoesOnWhenItsClaimantsMarkStopsHolding).
func (o *op) letGo(by *op) {
	o.wakeWaiters()
	o.nudgeClose()
	if by != nil && by != o {
		if gen := o.park.Load(); gen != 0 {
			by.enqueue(o, gen)
		}
		// The closes parked on o, for this key or another, may have
		// nothing left to wait for either: by resumes them, as
		// wakeWaiters wakes o's sleepers. One that still finds a key
		// busy parks again.
		for _, e := range o.takeParked() {
			if e.o != by && e.o.park.Load() == e.gen {
				by.enqueue(e.o, e.gen)
			}
		}
	}
}

// nudgeClose wakes o, if it sleeps in lockAll or lockFree with a nudge
// (op.dormant): a want of its subscription has just ended, or begun for a
// Subscribe, and o may have nothing left to wait for. The caller holds the
// shard lock of that want's key.
func (o *op) nudgeClose() {
	if c := o.nudge.Swap(nil); c != nil {
		close(*c)
	}
}

// needs reports whether o must wait for the other operations on k, in shard
// sh, before it goes on (op.scope): always, but for an Unsubscribe or a
// Release, which changes nothing for a key its subscription does not want,
// and for a Subscribe, which changes nothing for a key its subscription
// wants already. Such a key must not make o wait for a blockstore call on it
// (G11), nor be marked by o while o waits for another key. The caller holds
// sh's lock. Whether the subscription wants k changes only under that lock,
// so o's plan, made under the same locks once it waits for nothing, finds
// what needs found; a Subscribe that calls the blockstore looks at such keys
// again at its commit.
func (n *Notifier) needs(o *op, k cid.Cid, sh int32) bool {
	if o.scope == waitAll {
		return true
	}
	in := false
	if e := n.shards[sh].idx.lookupFor(k, o.sub); e != nil {
		in = o.sub.inInterest(e, k) // as candidates and commitRelease read it
	}
	return in == (o.scope == waitWanted)
}

// wants reports whether s wants k, in k's shard index x; the caller holds
// k's shard lock.
func wants(x *shardIndex, k cid.Cid, s *Subscription) bool {
	e := x.lookupFor(k, s)
	return e != nil && x.index(e, s, false) >= 0
}

// claimant returns the operation that o must wait for on k, in shard sh, or
// nil: another operation that reserved k, or one that started before o (a
// smaller id) and waits with k marked. The caller holds sh's lock.
func (n *Notifier) claimant(o *op, k cid.Cid, sh int32) *op {
	idx := &n.shards[sh].idx
	if r := idx.res.get(k); r != nil && r != o {
		return r
	}
	return idx.markAhead(k, o.id)
}

// markBusy finds the keys of o.resKeys that o must wait for now (claimed
// and needed) and, if there is one, marks the least of them (busyKey), o's
// only mark, and returns the wake-up channel of its claimant, which o sleeps
// on; else it returns nil and marks nothing. The caller holds their shard
// locks. A close does the same (Subscription.markIfBusy, markOne).
//
// A mark keeps the key for o against the operations that start after it: an
// operation that needs the key waits while the mark of one that started
// before it holds, sleeping on the youngest of those (markAhead, claimant).
// So o is not overtaken on the key it waits for: once that key's claimant
// lets go, o goes on before any later operation on the key, or, if it finds
// another of its keys busy then, moves its mark there (markOnly), waking the
// operations that slept behind it.
//
// One mark, not one per busy key (G11). A waiter that kept a mark on every
// key it had found busy, until it went on, kept them while it slept on one:
// once another of those keys was free again, every later operation on it
// waited behind the waiter, and so for the blockstore call that the waiter
// waited for, perhaps a stalled PutMany of a key that operation does not
// name (review; TestIO_WaiterHoldsUpOnlyTheKeyItWaitsFor). The price: while
// o waits for one key, later operations may take its others, and o may find
// one of them busy when it wakes, and wait again. Each such wait is for an
// operation on a key o needs, which G11 allows; a stream of such operations
// can keep o waiting, as it can keep any of them waiting for the store.
// Marking all of o's keys, as lockFree first did, held up the operations on
// keys o never found busy in the same way (TestIO_WaiterHoldsUpOnlyTheKeysItFoundBusy).
//
// One mark per key, kept by the oldest waiter, is the tempting
// simplification, and it loses marks: an older operation that marks a key
// after a younger waiter did replaces that waiter's mark, and once it goes
// on and unmarks, the key is unmarked while the waiter still waits, for a
// later operation to take. Found by review, with
// TestIO_OlderMarkKeepsAYoungerWaitersMark.
//
// It cannot deadlock: an operation waits for another's mark only if that one
// is older, and for a reservation only if its holder is in the blockstore,
// where it waits for nobody. So every chain of waits ends.
//
// The tempting alternative, reserving the keys that are free while waiting
// for the others, deadlocks: two waiters can each hold a key the other waits
// for; and it would hold those keys for the other's wait, against G11.
func (n *Notifier) markBusy(o *op) (busy chan struct{}, freed []parkEntry) {
	var b busyKey
	for i, k := range o.resKeys {
		sh := o.keyShards[i]
		if !b.less(k) {
			continue
		}
		if c := n.claimant(o, k, sh); c != nil && n.needs(o, k, sh) {
			b = busyKey{c, k, sh}
		}
	}
	if b.claimant == nil {
		return nil, nil
	}
	return b.claimant.wakeOnRelease(), n.markOnly(o, b.key, b.shard)
}

// busyKey is the key that a waiting operation marks and sleeps for, with
// its shard and its claimant: of the keys it must wait for, the least by
// its bytes. Any one would do for the waits; the least makes the choice
// the same whatever order the keys are visited in (a close visits its
// subscription's map), so that a model of the waits can tell which key
// holds others up.
type busyKey struct {
	claimant *op
	key      cid.Cid
	shard    int32
}

// less reports whether k, if busy, should replace b's key: b has none yet,
// or k is less.
func (b *busyKey) less(k cid.Cid) bool {
	return b.claimant == nil || k.KeyString() < b.key.KeyString()
}

// markOnly moves o's one mark to k, in shard sh: it drops o's mark on any
// other key, waking the operations asleep on it, and marks k. If it dropped
// one, it returns the pending closes parked on o, for the caller to resume
// once it has let its locks go (Notifier.resume): such a close has no
// goroutine to wake, and, parked on o for the key o no longer marks, would
// otherwise wait until o went on, for whatever o now waits for (G11). The
// caller holds the shard locks of o.resKeys and k.
func (n *Notifier) markOnly(o *op, k cid.Cid, sh int32) (freed []parkEntry) {
	idx := &n.shards[sh].idx
	if o.marked && idx.marked(k, o) {
		return nil
	}
	if o.marked {
		n.unmark(o)
		freed = o.takeParked()
	}
	idx.addMark(k, o)
	o.marked = true
	return freed
}

// holds reports whether o's mark on k, in k's shard index x, still holds up
// the operations that started after o. A close marks a key of its
// subscription's wants that it finds busy (Subscription.markIfBusy), and
// that want can end while it waits: the operation it waits for, or an older
// one, delivers the key's block, or unsubscribes it. The close then no
// longer needs k, and its mark must not keep operations on k waiting behind
// it: the close and the operations asleep on it are woken as the want ends
// (shardIndex.wakeStaleMarks, wakeDelivered; op.letGo), and the mark stays,
// dormant, holding again if the want comes back, until the close moves it
// or goes on. Every other operation needs the key it marked until it moves
// its mark or unmarks. The caller holds k's shard lock, under which wants
// end. With one mark per waiter, on the key it waits for, this matters in
// the moment between a waiter's wake-up and its next round, while it waits
// for its shard locks (TestIO_CloseWakesWhenItsOwnWantEnds,
// TestIO_StaleMarkHoldsAgainWhenTheWantReturns): once the key's holder has
// let go, a later operation should not wait for that.
//
// A waiting Subscribe's mark is the other way round: it needs only the keys
// its subscription does not want (needs), so its mark on k holds only while
// the subscription does not want k. The want may begin while it waits, by
// an older Subscribe of the same subscription; its sleepers are then woken
// (shardIndex.add), and the mark holds again should the want end while the
// Subscribe still waits (review).
func (o *op) holds(x *shardIndex, k cid.Cid) bool {
	switch {
	case o.whileWanted():
		return wants(x, k, o.sub)
	case o.scope == waitUnwanted:
		return !wants(x, k, o.sub)
	}
	return true
}

// whileWanted reports whether o's marks hold only while its subscription
// wants their key (holds): a close's, an Unsubscribe's and a Release's.
func (o *op) whileWanted() bool { return o.closing || o.scope == waitWanted }

// dormant reports whether o's marks can go dormant (holds): when its
// subscription's want of their key ends, for a close, an Unsubscribe or a
// Release (whileWanted), or begins, for a Subscribe. Such an op also sleeps
// with a nudge (lockFree, Subscription.lockAll), so that it wakes when that
// happens: its wait may be over. Without that, when a waiter kept a mark on
// every key it had found busy, a waiting Unsubscribe kept holding up
// operations on a key its subscription had stopped wanting, and slept on
// behind other waiters on it, both until a stalled blockstore call on
// another key returned (G11; review,
// TestIO_WaitingReleaseLetsGoOfAKeyNoLongerWanted); a waiting Subscribe did
// the same for a key its subscription had started wanting (review). With one
// mark per waiter, the nudge spares such an op the wait for a holder of a
// key it no longer needs.
func (o *op) dormant() bool { return o.scope != waitAll || o.closing }

// touchAll bumps the version of o.resKeys (shardIndex.touch): o has taken
// their shard locks and is about to read or change them. The caller holds
// those locks.
func (n *Notifier) touchAll(o *op) {
	for i, k := range o.resKeys {
		n.shards[o.keyShards[i]].idx.touch(k)
	}
}

// unmark removes o's marks and wakes the operations waiting for them. The
// caller holds the shard locks of o.resKeys.
func (n *Notifier) unmark(o *op) {
	if !o.marked {
		return
	}
	for i, k := range o.resKeys {
		idx := &n.shards[o.keyShards[i]].idx
		idx.dropMark(k, o)
	}
	o.marked = false
	o.wakeWaiters()
}

// The blockstore is called with no lock held (G11) but with the operation's
// keys reserved. The tempting designs without reservations all fail:
//
//   - Release the locks for the I/O and take them again, reserving nothing:
//     a Subscribe whose Get misses, and whose want is recorded after a
//     Publish of the key collected its targets but before that Publish's
//     PutMany returned, never gets the block (the lost wakeup this library
//     exists to close); an Unsubscribe in the gap gets a block it no longer
//     wants.
//   - Put first, then lock and deliver: which remote blocks may be stored
//     depends on the wants (G4), so the decision needs the index, and a want
//     that ends or begins between that decision and the put makes it store
//     a block nobody wants, or skip one that a new want needs.
//   - Reserve only the blocks and collect the HAVEs after the put: the
//     Publish then takes effect at two instants, which a garbage collection
//     deleting one of its blocks in between can tell apart.
//   - Record Subscribe's wants first and check the blockstore unreserved: a
//     Publish in between delivers the block, and the check finds it again:
//     delivered twice (G2).
//   - Let a Publish that names a key only as a HAVE or DONT_HAVE read its
//     wanters through another operation's reservation instead of waiting for
//     that operation's PutMany (reading changes nothing): the reader must then
//     take effect before the reserver, but a garbage collection that deletes
//     one of the reserver's blocks between its PutMany and the read pins the
//     reserver's instant before the read, and the reader has then sent HAVEs
//     for wants that had already ended. (BenchmarkW3Disjoint shows what the wait costs.)
//   - A per-key mutex held across the I/O: that is I/O under a lock, and an
//     operation waiting for it would hold its shard locks meanwhile, stalling
//     every key of those shards behind one slow disk.
//
// With the reservation, an operation on a reserved key waits, holding no
// lock, until the reserving operation has committed, so the keys look to
// the reserving operation as if the I/O had run under its locks.

// unlocked runs io, a blockstore call, with o's keys reserved and no lock of
// the Notifier held, and returns holding o's shard locks again, the
// reservations released. The caller holds o's shard locks and has checked,
// under them, that the Notifier is not closed (see Close). If io panics, the
// reservations are released, and no lock kept, before the panic goes on: else
// the operations on those keys, and Close, would wait for ever.
func (n *Notifier) unlocked(ctx context.Context, o *op, io func(context.Context, *Notifier, *op) error) error {
	n.reserve(o)
	n.unlock(o.locks)
	returned := false
	defer func() {
		if !returned { // io panicked
			n.lock(o.locks)
			n.unreserve(o)
			n.unlock(o.locks)
		}
	}()
	err := io(ctx, n, o)
	returned = true
	n.lock(o.locks)
	n.unreserve(o)
	return err
}

// reserve reserves o.resKeys for o, or only the keys of o.hits if
// o.onlyHits. The caller holds their shard locks.
func (n *Notifier) reserve(o *op) {
	if o.onlyHits {
		for i := range o.hits {
			n.shards[o.hits[i].shard].idx.res.put(o.hits[i].key, o)
		}
	} else {
		for i, k := range o.resKeys {
			n.shards[o.keyShards[i]].idx.res.put(k, o)
		}
	}
	n.inflight.Add(1)
}

// unreserve releases o's reservations and wakes the operations waiting for
// them, which then wait for the shard locks that the caller holds. A waiter
// asks for its wake-up channel under the shard lock of a key that o still
// reserves (wakeOnRelease), so every channel asked for is closed here.
func (n *Notifier) unreserve(o *op) {
	if o.onlyHits {
		for i := range o.hits {
			n.shards[o.hits[i].shard].idx.res.drop(o.hits[i].key, o)
		}
	} else {
		for i, k := range o.resKeys {
			n.shards[o.keyShards[i]].idx.res.drop(k, o)
		}
	}
	o.wakeWaiters()
	n.inflight.Done()
}

// wakeOnRelease returns a channel that o closes when it releases its
// reservations (unreserve) or its marks (unmark), or when one of its marks
// stops holding (op.letGo: a close's, Unsubscribe's, Release's or
// Subscribe's), creating it on the
// first call: an operation that nobody waits for allocates none. The caller
// holds the shard lock of a key that o reserves or marks; waiters in other
// shards may call it at the same time. A waiter woken while o still holds up
// its key asks again and gets a new channel; a channel handed out while o
// holds up a key is closed no later than when o lets go of that key, under
// its shard lock.
//
// It loops: after another waiter's channel won the CompareAndSwap,
// letGo, which holds one shard lock only, may have swapped that
// channel out already; reading it once more could find nil (review,
// TestWakeOnRelease_RacesWakeWaiters).
func (o *op) wakeOnRelease() chan struct{} {
	for {
		if w := o.wake.Load(); w != nil {
			return *w
		}
		c := make(chan struct{})
		if o.wake.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

// keyShards records the shard of each of keys in o.keyShards and adds it to
// o.locks.
func (n *Notifier) keyShards(o *op, keys []cid.Cid) {
	for _, k := range keys {
		sh := n.shardOf(k)
		o.keyShards = append(o.keyShards, sh)
		o.locks.Add(int(sh))
	}
}

// wakeWaiters closes the channel that wakeOnRelease handed out, if any. The
// caller holds the shard locks of every key o reserves or marks, or, from
// letGo, that of the one key whose want behind o's mark has just
// ended: waiters woken for o's other keys then ask again.
func (o *op) wakeWaiters() {
	if w := o.wake.Swap(nil); w != nil {
		close(*w)
	}
}
