package notifier

import (
	"context"
	"runtime"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Tests of closes and other waiters woken when the wants they wait on end,
// and of the order of marks of several waiters. stallStore is in io_test.go.

// A close asleep behind another operation's mark on a key wakes and goes on
// when its own subscription's want of that key ends while it sleeps: it has
// nothing left to wait for. Found by review: s2 wants kA alone; Remove(s2)
// slept behind a Publish of HAVEs of kA and kB, marking kA while it waited
// for kB's stalled PutMany, and an operation older than both ended s2's
// want of kA (a delivery, or an Unsubscribe); Remove(s2) slept on until the
// PutMany of kB, a key s2 never wanted, returned (G11).
//
// A waiter now marks only the key it waits for, and only while that key is
// busy for it (Notifier.markBusy): that Publish no longer marks kA while it
// waits for kB, and Remove(s2) goes on at once. The wake-up still matters in
// the moment a mark is for: the Publish, of HAVEs of kJ and kA, marks kA,
// reserved by a Subscribe whose Get of kY stalls, and kA's release wakes it
// to wait for the lock of kJ's shard, which the test holds, with kA marked.
// Remove(s2) sleeps behind that mark; then the older operation ends s2's
// want of kA, and Remove(s2) must return before the Publish goes on.
func TestIO_CloseWakesWhenItsOwnWantEnds(t *testing.T) {
	for _, how := range []string{"delivered", "unsubscribed"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n := New(st, WithShards(4))
				bA := blockInShard(n, "own-want-A", 2, true)
				bX := blockInShard(n, "own-want-X", 0, true)
				kA, kJ := bA.Cid(), blockInShard(n, "own-want-J", 1, true).Cid()
				s2 := mustSub(t, n, 2)
				require.NoError(t, s2.Subscribe(ctx, kA))
				// kA busy, so that the Publish below marks it (Notifier.markBusy).
				u, releaseY, subY := st.reserveByGet(t, n, 3, kA, blockInShard(n, "own-want-Y", 2, true).Cid())

				unblock0, older := startOlderEndOfWant(t, n, s2, how, bA, bX)
				haves, unblock1 := havesHeldWithKAMarked(t, n, kJ, kA, releaseY, subY)
				removed := make(chan struct{})
				go func() { defer close(removed); s2.Remove() }()
				spinWaiting(t, n, 1) // asleep on the Publish's mark on kA

				unblock0()
				require.NoError(t, <-older)
				require.False(t, s2.Wants(kA), "s2 wants nothing now")
				if !returnsWhileHeld(removed) {
					unblock1()
					<-removed
					t.Fatal("Remove(s2), whose subscription wants nothing now, sleeps until the Publish it slept behind goes on")
				}
				unblock1()
				require.NoError(t, <-haves)
				u.Remove()
				requireIndexEmpty(t, n)
				require.NoError(t, n.Close())
			})
		})
	}
}

// havesHeldWithKAMarked starts a Publish of HAVEs of kJ and kA, in a
// synctest bubble, and returns once that Publish, woken, waits for the lock
// of kJ's shard, which it holds until unblock, with kA marked: kA must be
// reserved by the Subscribe that reserveByGet started, whose Get releaseY
// lets go on (subY gets its result), and kJ be in a shard below kA's. The
// Publish's result goes to haves.
func havesHeldWithKAMarked(t *testing.T, n *Notifier, kJ, kA cid.Cid, releaseY func(), subY chan error) (haves chan error, unblock func()) {
	t.Helper()
	require.Less(t, n.shardOf(kJ), n.shardOf(kA), "setup: kJ's shard is locked first")
	haves = make(chan error, 1)
	go func() { haves <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kJ, kA}}) }()
	spinWaiting(t, n, 1) // asleep on the Subscribe's reservation of kA, kA marked
	sh := n.shardOf(kJ)
	unblock = blockShard(t, n, nil, sh)
	releaseY()
	require.NoError(t, <-subY)
	waitWaiters(t, &n.shards[sh].mu, 1)
	require.Zero(t, n.waiting.Load(), "setup: the Publish, woken, waits for a shard lock")
	requireMarks(t, n, kA, 1, "setup: marks on kA")
	return haves, unblock
}

// returnsWhileHeld reports whether returned is closed within a bound of
// yields, with some goroutine waiting for a shard lock, on which
// synctest.Wait would wait for ever.
func returnsWhileHeld(returned chan struct{}) bool {
	for range 1_000_000 {
		select {
		case <-returned:
			return true
		default:
			runtime.Gosched()
		}
	}
	return false
}

// startOlderEndOfWant holds shard 0 and starts an operation that will end
// s's want of bA's key and takes its id first (how: "delivered", a Publish
// of bA and bX, or "unsubscribed", an Unsubscribe of their keys); it returns
// once that operation waits for shard 0: unblock0 lets it go on, and older
// gets its result.
func startOlderEndOfWant(t *testing.T, n *Notifier, s *Subscription, how string, bA, bX blocks.Block) (unblock0 func(), older chan error) {
	t.Helper()
	switch how {
	case "delivered":
		return publishHeldAtShard0(t, n, bA, bX)
	case "unsubscribed":
		unblock0 = blockShard(t, n, nil, 0)
		older = make(chan error, 1)
		go func() { s.Unsubscribe(bA.Cid(), bX.Cid()); older <- nil }()
		waitWaiters(t, &n.shards[0].mu, 1)
		return unblock0, older
	default:
		t.Fatalf("startOlderEndOfWant: unknown older operation %q", how)
		return nil, nil
	}
}

// publishHeldAtShard0 holds shard 0 and starts a Publish of blks, which takes
// its id and then waits for shard 0: unblock0 lets it go on, and published
// gets its result.
func publishHeldAtShard0(t *testing.T, n *Notifier, blks ...blocks.Block) (unblock0 func(), published chan error) {
	t.Helper()
	unblock0 = blockShard(t, n, nil, 0)
	published = make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: blks}) }()
	waitWaiters(t, &n.shards[0].mu, 1)
	return unblock0, published
}

// Deliveries of a key to other subscriptions wake neither a close whose
// want of the key ended while it waited nor what it holds up. Found by
// review: s2 wanted kA, kB and kC; Remove(s2) slept on kB's stalled PutMany
// with all three marked; an older Unsubscribe ended s2's want of kA, the
// one wake-up due, and left Remove's mark on kA dormant; a Publish of HAVEs
// of kC slept on Remove's mark on kC. Each of 20 deliveries of kA to s3 woke
// both, to sleep again: the close because its dormant mark on kA did not
// hold, and the Publish with it.
//
// A close now marks only the key it waits for, and only while that key is
// busy for it (Subscription.markIfBusy, markOne): Remove(s2), asleep on kB,
// marks kB alone, so neither that dormant mark nor that sleeper can arise in
// this scene, and the test pins what happens instead: the Publish of HAVEs
// of kC goes ahead at once (G11), and the deliveries of kA wake nobody.
func TestIO_DeliveryToOthersWakesNoDormantClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		del := st.Blockstore.(blockDeleter)
		n := New(st, WithShards(2))
		bA := blockInShard(n, "dormant-A", 1, true)
		bB := blockInShard(n, "dormant-B", 1, true)
		bC := blockInShard(n, "dormant-C", 1, true)
		bX := blockInShard(n, "dormant-X", 0, true)
		kA, kB, kC := bA.Cid(), bB.Cid(), bC.Cid()
		s2 := mustSub(t, n, 2)
		require.NoError(t, s2.Subscribe(ctx, kA, kB, kC))
		u, releaseY, subU := reserveKAAndKC(t, st, n, kA, kC)
		removed, releaseB, pubB := removeAsleepOnKB(t, st, n, s2, kA, bB, bX, releaseY, subU)
		requireMarks(t, n, kA, 0, "Remove(s2), asleep on kB, marks kA")
		requireMarks(t, n, kC, 0, "Remove(s2), asleep on kB, marks kC")
		requireMarks(t, n, kB, 1, "Remove(s2), asleep on kB, does not mark it")
		haves := make(chan error, 1)
		go func() { haves <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}) }()
		returnsNow(t, haves, releaseB, "a Publish of HAVEs of kC waited for the stalled PutMany of kB, which Remove(s2) waits for (G11)")

		s3 := mustSub(t, n, 3)
		const deliveries = 20
		woke := wakesOfDeliveries(t, n, del, s3, bA, deliveries)
		releaseB()
		require.NoError(t, <-pubB)
		<-removed
		s3.Remove()
		u.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
		require.Zero(t, woke, "the sleepers woke %d times for %d deliveries of kA to s3, which changed nothing for them", woke, deliveries)
	})
}

// reserveKAAndKC makes kA and kC busy, so that Remove finds them busy at
// first (Subscription.markIfBusy): reserved by a Subscribe of a new
// subscription u whose Get of kY stalls. It returns once that Get has
// begun: releaseY lets it go on, and subU gets the Subscribe's result.
func reserveKAAndKC(t *testing.T, st *stallStore, n *Notifier, kA, kC cid.Cid) (u *Subscription, releaseY func(), subU chan error) {
	t.Helper()
	u = mustSub(t, n, 4)
	kY := blockInShard(n, "dormant-Y", 1, true).Cid()
	releaseY = st.stall(t, kY)
	subU = make(chan error, 1)
	go func() { subU <- u.Subscribe(ctx, kA, kC, kY) }()
	require.Equal(t, kY, <-st.entered)
	return u, releaseY, subU
}

// removeAsleepOnKB has s2.Remove() sleep on kB's stalled PutMany, while an
// Unsubscribe of kA (and bX's key), older than the Remove, ends s2's want of
// kA. u's Subscribe (releaseY, subU) holds kA and kC at first: Remove sleeps
// on it, marking one of them, then, once it goes on, on kB, marking kB
// instead. removed is closed once Remove returns; releaseB lets the PutMany
// of kB go on and pubB gets that Publish's result.
func removeAsleepOnKB(t *testing.T, st *stallStore, n *Notifier, s2 *Subscription, kA cid.Cid, bB, bX blocks.Block, releaseY func(), subU chan error) (removed chan struct{}, releaseB func(), pubB chan error) {
	t.Helper()
	unblock0 := blockShard(t, n, nil, 0)
	older := make(chan struct{})
	go func() { defer close(older); s2.Unsubscribe(kA, bX.Cid()) }()
	waitWaiters(t, &n.shards[0].mu, 1)
	removed = make(chan struct{})
	go func() { defer close(removed); s2.Remove() }()
	spinWaiting(t, n, 1)                          // asleep on u's reservations
	releaseB, pubB = st.publishStalled(t, n, bB)  // kB reserved, its PutMany stalled
	wakeAndSleepAgain(t, n, releaseY, subU, 1, 1) // asleep on kB's reservation, kB marked
	unblock0()
	<-older // s2 no longer wants kA
	synctest.Wait()
	return removed, releaseB, pubB
}

// wakeAndSleepAgain lets the stalled Get that release holds go on, checks
// that the Subscribe stalled in it returns nil on sub, and returns once the
// operations that slept on its reservations have begun woken more waits
// (they woke and sleep again) and waiting operations wait.
func wakeAndSleepAgain(t *testing.T, n *Notifier, release func(), sub chan error, woken uint64, waiting int64) {
	t.Helper()
	slept := n.waits.Load()
	release()
	require.NoError(t, <-sub)
	for n.waits.Load() < slept+woken || n.waiting.Load() != waiting {
		runtime.Gosched()
	}
}

// blockDeleter is a blockstore's garbage collection of one block.
type blockDeleter interface {
	DeleteBlock(context.Context, cid.Cid) error
}

// wakesOfDeliveries has bA delivered to s3 deliveries times (s3 subscribes
// to it, bA is published, s3 gets it, bA is deleted from the store so that
// the next Publish is a delivery again, the bubble settles) and returns how
// many waits the sleepers began meanwhile.
func wakesOfDeliveries(t *testing.T, n *Notifier, del blockDeleter, s3 *Subscription, bA blocks.Block, deliveries int) uint64 {
	t.Helper()
	kA := bA.Cid()
	before := n.waits.Load()
	for range deliveries {
		require.NoError(t, s3.Subscribe(ctx, kA))
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{bA}}))
		require.Equal(t, []blocks.Block{bA}, recv(t, s3).Blocks)
		require.NoError(t, del.DeleteBlock(ctx, kA))
		synctest.Wait()
	}
	return n.waits.Load() - before
}

// An operation that started before a waiter, but marks a key they share
// after the waiter did, leaves the waiter's mark in place when it goes on:
// a Publish that starts after the waiter still waits behind it (fairness,
// Notifier.markBusy). Found by review: a key kept one mark, which the older
// operation replaced and its unmark then deleted, so the later Publish took
// the key while the waiter still waited.
//
// A waiter marks only the key it waits for, and only while that key is
// busy for it (markBusy), so the scene is the moment the waiter's mark is
// for: kA's reservation is released and the waiter, woken, has not looked
// again yet. The waiter, a Publish of bJ and bA, marks kA, reserved by a
// Subscribe whose Get of kY stalls; the older operation, a Publish of bX
// and bA held at shard 0 until then, marks it second. kA's release wakes
// both; the waiter waits for the lock of kJ's shard, which the test holds,
// while the older one goes on, unmarking kA, and returns. A Publish of bA
// that starts then must wait behind the waiter's mark.
func TestIO_OlderMarkKeepsAYoungerWaitersMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(4))
		bA := blockInShard(n, "older-mark-A", 2, true)
		bJ := blockInShard(n, "older-mark-J", 1, true)
		bX := blockInShard(n, "older-mark-X", 0, true)
		kA := bA.Cid()
		// kA busy, so that both mark it (Notifier.markBusy).
		u, releaseY, subY := st.reserveByGet(t, n, 1, kA, blockInShard(n, "older-mark-Y", 2, true).Cid())

		// The older operation takes its id, then waits for shard 0.
		unblock0, older := publishHeldAtShard0(t, n, bX, bA)

		// The waiter waits for kA, marking it.
		waiter := make(chan error, 1)
		go func() { waiter <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bJ, bA}}) }()
		spinWaiting(t, n, 1)

		// The older operation waits for kA too, marking it.
		unblock0()
		spinWaiting(t, n, 2)
		requireMarks(t, n, kA, 2, "setup: marks on kA")

		// kA is released: the waiter wakes to wait for shard 1, the older
		// operation goes on, unmarks kA and returns.
		unblock1 := blockShard(t, n, nil, 1)
		releaseY()
		require.NoError(t, <-subY)
		require.NoError(t, <-older)
		waitWaiters(t, &n.shards[1].mu, 1)
		require.Zero(t, n.waiting.Load(), "the waiter waits for shard 1, having not looked at kA again")

		later := publishBehindTheWaiter(t, n, bA, 1)
		unblock1()
		require.NoError(t, <-waiter)
		require.NoError(t, <-later)
		u.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
	})
}

// requireMarks checks that k, in its shard, carries want marks; why says
// what the check is for.
func requireMarks(t *testing.T, n *Notifier, k cid.Cid, want int, why string) {
	t.Helper()
	sh := &n.shards[n.shardOf(k)]
	sh.mu.Lock()
	got := len(sh.idx.marks[k])
	sh.mu.Unlock()
	require.Equal(t, want, got, why)
}

// publishBehindTheWaiter starts a Publish of bA after the waiter of
// TestIO_OlderMarkKeepsAYoungerWaitersMark and checks that it goes to sleep
// behind the waiter, waiting operations asleep then, instead of overtaking
// it; the channel returned gets its result. The waiter waits for a shard
// lock, on which synctest.Wait would wait for ever: it spins instead.
func publishBehindTheWaiter(t *testing.T, n *Notifier, bA blocks.Block, waiting int64) (later chan error) {
	t.Helper()
	later = make(chan error, 1)
	returned := make(chan struct{})
	var err error
	go func() { defer close(returned); err = n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA}}) }()
	if !sleepsOrReturns(n, waiting, returned) {
		t.Errorf("a Publish of kA that started after the waiter overtook it (returned %v)", err)
	}
	go func() { <-returned; later <- err }()
	return later
}

// sleepsOrReturns spins until waiting operations are asleep (n.waiting),
// reporting true, or until returned is closed, reporting false: whether an
// operation just started goes to sleep, where synctest.Wait cannot tell, as
// some goroutine waits for a shard lock (a sync.Mutex does not block
// durably).
func sleepsOrReturns(n *Notifier, waiting int64, returned chan struct{}) bool {
	for {
		select {
		case <-returned:
			return false
		default:
		}
		if n.waiting.Load() == waiting {
			return true
		}
		runtime.Gosched()
	}
}

// A key marked by two waiters holds up an operation that started between
// them: it waits for the older one, whichever marked the key first
// (shardIndex.markAhead looks only at the marks of operations that started
// before the caller).
//
// A waiter marks only the key it waits for, and only while that key is
// busy for it (markBusy), so the scene is the moment the marks are for: the
// key's reservation is released and the two waiters, woken, have not looked
// again yet. kA is reserved by a Subscribe whose Get of kZ stalls; the
// youngest, a Publish of bJ and bA, marks it first, the oldest, a Publish of
// bX and bA held at shard 0 until then, second. kA's release wakes both, to
// wait for the locks of shards 0 and 2, which the test holds. The middle, an
// Unsubscribe of kY and kA held at shard 1 until then, must then sleep
// behind the oldest's mark.
func TestIO_WaiterWaitsForTheOldestMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(4))
		bA := blockInShard(n, "oldest-mark-A", 3, true)
		bJ := blockInShard(n, "oldest-mark-J", 2, true)
		bX := blockInShard(n, "oldest-mark-X", 0, true)
		kA := bA.Cid()
		kY := blockInShard(n, "oldest-mark-Y", 1, true).Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kY, kA)) // the Unsubscribe below needs keys s wants

		// kA busy, so that the oldest and the youngest mark it
		// (Notifier.markBusy).
		u, releaseZ, subZ := st.reserveByGet(t, n, 2, kA, blockInShard(n, "oldest-mark-Z", 3, true).Cid())

		// Ids in this order: oldest, middle, youngest. The first two wait
		// for shards 0 and 1, holding no lock.
		unblock0, unblock1 := blockShard(t, n, nil, 0), blockShard(t, n, nil, 1)
		oldest := make(chan error, 1)
		go func() { oldest <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bX, bA}}) }()
		waitWaiters(t, &n.shards[0].mu, 1) // the oldest, a Publish
		middle := make(chan struct{})
		go func() { defer close(middle); s.Unsubscribe(kY, kA) }()
		waitWaiters(t, &n.shards[1].mu, 1) // the middle, an Unsubscribe

		youngest, unblockBoth := youngestThenOldestMarkKA(t, n, bJ, bA, unblock0, releaseZ, subZ)
		middleWaitsForTheOldest(t, n, unblock1, middle)
		unblockBoth()
		require.NoError(t, <-oldest)
		require.NoError(t, <-youngest)
		<-middle
		u.Remove()
		s.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
	})
}

// middleWaitsForTheOldest lets the middle operation, held at shard 1 until
// unblock1, go on, and checks that it goes to sleep behind the oldest
// instead of going ahead of it (middle is closed once it returns).
func middleWaitsForTheOldest(t *testing.T, n *Notifier, unblock1 func(), middle chan struct{}) {
	t.Helper()
	unblock1()
	if !sleepsOrReturns(n, 1, middle) {
		t.Error("an Unsubscribe of kA went ahead of a waiting operation on kA that started before it")
	}
}

// youngestThenOldestMarkKA has the youngest, a Publish of bJ and bA, mark kA
// first, and the oldest, held at shard 0 until unblock0, second, both asleep
// on the Subscribe that reserves kA; then holds shards 0 and 2 and frees kA,
// letting that Subscribe's Get (releaseZ) go on (subZ gets its result): both
// wake, and wait for those shards' locks with kA marked. unblockBoth lets
// them go on; youngest gets the youngest's result.
func youngestThenOldestMarkKA(t *testing.T, n *Notifier, bJ, bA blocks.Block, unblock0, releaseZ func(), subZ chan error) (youngest chan error, unblockBoth func()) {
	t.Helper()
	youngest = make(chan error, 1)
	go func() { youngest <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bJ, bA}}) }()
	spinWaiting(t, n, 1)
	unblock0()
	spinWaiting(t, n, 2)
	requireMarks(t, n, bA.Cid(), 2, "setup: marks on kA")
	hold0, hold2 := blockShard(t, n, nil, 0), blockShard(t, n, nil, 2)
	releaseZ()
	require.NoError(t, <-subZ)
	waitWaiters(t, &n.shards[0].mu, 1)
	waitWaiters(t, &n.shards[2].mu, 1)
	require.Zero(t, n.waiting.Load(), "both wait for a shard lock, having not looked at kA again")
	requireMarks(t, n, bA.Cid(), 2, "setup: marks on kA")
	return youngest, func() { hold0(); hold2() }
}

// A close's mark that stopped holding when its subscription's want ended
// holds again when the subscription wants the key again while the close
// still waits: a Publish of the key that starts after the close waits behind
// it, instead of taking the key and making the close, once it looks again,
// wait behind that Publish's PutMany. Found by review: the first version of
// wakeStaleMarks deleted the mark.
//
// A close now marks only the key it waits for, and only while that key is
// busy for it (Subscription.markIfBusy, markOne), and a close whose want of
// its marked key ends is woken to look again (op.letGo); so the scene is the
// moment the mark is for: s wants kA and kB, Remove(s) marks kA, reserved by
// a Subscribe whose Get of kY stalls, and kA's release wakes it to wait for
// the lock of kB's shard, which the test holds. An Unsubscribe of kA older
// than the Remove then ends s's want, and s subscribes to kA again.
func TestIO_StaleMarkHoldsAgainWhenTheWantReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(4))
		bA := blockInShard(n, "mark-returns-A", 2, true)
		bX := blockInShard(n, "mark-returns-X", 0, true)
		kA, kB := bA.Cid(), blockInShard(n, "mark-returns-B", 1, true).Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		// kA busy, so that Remove marks it (Subscription.markIfBusy).
		u, releaseY, subY := st.reserveByGet(t, n, 2, kA, blockInShard(n, "mark-returns-Y", 2, true).Cid())
		unblock0, older := startOlderEndOfWant(t, n, s, "unsubscribed", bA, bX)

		removed := make(chan struct{})
		go func() { defer close(removed); s.Remove() }()
		spinWaiting(t, n, 1) // asleep on the Subscribe's reservation of kA, kA marked
		unblock1 := blockShard(t, n, nil, 1)
		releaseY()
		require.NoError(t, <-subY)
		waitWaiters(t, &n.shards[1].mu, 1)
		require.Zero(t, n.waiting.Load(), "setup: Remove, woken, waits for a shard lock")
		requireMarks(t, n, kA, 1, "setup: marks on kA")

		unblock0()
		require.NoError(t, <-older)              // the want of kA ended: Remove's mark on it is dormant
		require.NoError(t, s.Subscribe(ctx, kA)) // and holds again
		require.True(t, n.Wanted(kA))

		returned := make(chan struct{})
		var err error
		go func() {
			defer close(returned)
			err = n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{bA}})
		}()
		if !sleepsOrReturns(n, 1, returned) {
			t.Errorf("a Publish of kA that started after the waiting Remove went ahead of it (returned %v)", err)
		}
		unblock1()
		<-removed
		<-returned
		require.NoError(t, err)
		u.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
	})
}
