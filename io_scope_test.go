package notifier

import (
	"context"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Tests of what Subscribe, Unsubscribe and Release wait for: only the keys
// their change concerns (waitScope), letting go of a key once their
// subscription's want of it begins or ends.

// An Unsubscribe or Release of keys that include one its subscription does
// not want waits for no blockstore call on that key (G11): a stalled Get of
// Z by another subscription's Subscribe, or a stalled PutMany of Z, holds up
// s.Unsubscribe(A, Z) not at all, and it ends s's want of A. It once waited
// on every key it named (review). While it does wait, for a key it wants,
// it marks only the keys it wants, so an operation on Z does not queue
// behind it either.
func TestIO_UnsubscribeWaitsForNoKeyItDoesNotWant(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stall func(t *testing.T, n *Notifier, st *stallStore, z blocks.Block) (release func(), done chan error)
	}{
		{"Get", stallGetOfZ},
		{"PutMany", func(t *testing.T, n *Notifier, st *stallStore, z blocks.Block) (func(), chan error) {
			return st.publishStalled(t, n, z)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n, cancels := newWithCancels(t, st)
				b := mkBlocks("unsubscribe-own-keys", 2)
				kA, kZ := b[0].Cid(), b[1].Cid()
				s := mustSub(t, n, 1)
				require.NoError(t, s.Subscribe(ctx, kA))
				release, done := tc.stall(t, n, st, b[1])

				released := make(chan []cid.Cid, 1)
				go func() { released <- s.Release(kA, kZ) }()
				synctest.Wait()
				select {
				case got := <-released:
					require.Equal(t, []cid.Cid{kA}, got)
				default:
					release()
					<-released
					t.Fatalf("Release(A, Z) by a subscription that does not want Z waited for the stalled %s of Z (G11)", tc.name)
				}
				require.False(t, s.Wants(kA))
				require.Equal(t, []cid.Cid{kA}, cancels.take())
				release()
				require.NoError(t, <-done)
			})
		})
	}
}

// stallGetOfZ stalls a Subscribe of z by another subscription of n (2) in its
// Get of z, with z reserved, and returns what lets the Get go on and the
// channel the Subscribe's error goes to.
func stallGetOfZ(t *testing.T, n *Notifier, st *stallStore, z blocks.Block) (release func(), done chan error) {
	t.Helper()
	release = st.stall(t, z.Cid())
	other := mustSub(t, n, 2)
	done = make(chan error, 1)
	go func() { done <- other.Subscribe(ctx, z.Cid(), z.Cid()) }() // two keys: the general path, which reserves
	require.Equal(t, z.Cid(), <-st.entered)
	return release, done
}

// While an Unsubscribe waits for a key its subscription wants, it marks only
// the keys its subscription wants: an operation on another key it names,
// which it does not want, does not queue behind it (G11: that would wait for
// the stalled PutMany of A).
func TestIO_WaitingUnsubscribeMarksOnlyKeysItWants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("unsubscribe-marks-own", 2)
		kA, kZ := b[0].Cid(), b[1].Cid()
		s, other := mustSub(t, n, 1), mustSub(t, n, 2)
		require.NoError(t, s.Subscribe(ctx, kA))
		require.NoError(t, other.Subscribe(ctx, kZ))
		release, published := st.publishStalled(t, n, b[0]) // A reserved: s's Unsubscribe of A waits

		unsubscribed := make(chan struct{})
		go func() { defer close(unsubscribed); s.Unsubscribe(kA, kZ) }()
		spinWaiting(t, n, 1)
		zDone := make(chan struct{})
		go func() { defer close(zDone); other.Unsubscribe(kZ) }()
		synctest.Wait()
		select {
		case <-zDone:
		default:
			release()
			<-zDone
			t.Fatal("an Unsubscribe of Z queued behind a waiting Unsubscribe(A, Z) whose subscription does not want Z")
		}
		require.False(t, other.Wants(kZ))
		release()
		require.NoError(t, <-published)
		<-unsubscribed
	})
}

// A Subscribe of A and B by a subscription that wants A already checks only
// B, and holds up no operation on A while its Get of B stalls: not a Publish
// of A, nor another subscription's Subscribe or Unsubscribe of A (G11: none
// of them needs B's block). It once reserved every key it named (review).
func TestIO_SubscribeHoldsUpNoKeyItDoesNotCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(n *Notifier, other *Subscription, a blocks.Block) error
	}{
		{"publish", func(n *Notifier, _ *Subscription, a blocks.Block) error {
			return n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{a}})
		}},
		{"subscribe", func(_ *Notifier, other *Subscription, a blocks.Block) error {
			return other.Subscribe(ctx, a.Cid(), a.Cid()) // two keys: the general path
		}},
		{"unsubscribe", func(_ *Notifier, other *Subscription, a blocks.Block) error {
			other.Unsubscribe(a.Cid())
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n, _ := newWithCancels(t, st)
				b := mkBlocks("subscribe-holds-up", 2)
				kA, kB := b[0].Cid(), b[1].Cid()
				s, other := mustSub(t, n, 1), mustSub(t, n, 2)
				require.NoError(t, s.Subscribe(ctx, kA))
				require.NoError(t, other.Subscribe(ctx, kA))
				release := st.stall(t, kB)
				subscribed := make(chan error, 1)
				go func() { subscribed <- s.Subscribe(ctx, kA, kB) }()
				require.Equal(t, kB, <-st.entered, "the Get of B stalls; A is not read")

				done := make(chan error, 1)
				go func() { done <- tc.op(n, other, b[0]) }()
				returnsNow(t, done, release, "the "+tc.name+" of A waited for the stalled Get of B (G11)")
				release()
				require.NoError(t, <-subscribed)
				require.True(t, s.Wants(kB))
			})
		})
	}
}

// The other side of TestIO_SubscribeHoldsUpNoKeyItDoesNotCheck: a key the
// subscriber wanted when the Subscribe began, left unreserved during the
// check of another, may stop being wanted meanwhile. The Subscribe then
// starts over, as if it began after that end: a local Publish delivered A
// and stored it, so the new attempt finds A in the blockstore and hands it
// over a second time, and wants B. Without the start-over it would return
// with A unwanted and unchecked, a Subscribe of A that did nothing for A
// although it came after A's delivery.
func TestIO_SubscribeStartsOverWhenAWantEndsDuringItsCheck(t *testing.T) {
	// ctx done: a Subscribe that would start over returns its ctx's error
	// instead, having changed nothing, as when ctx ends its wait.
	for _, ctxDone := range []bool{false, true} {
		t.Run(map[bool]string{false: "goes on", true: "ctx done"}[ctxDone], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { subscribeStartsOver(t, ctxDone) })
		})
	}
}

func subscribeStartsOver(t *testing.T, ctxDone bool) {
	st := newStallStore()
	n, cancels := newWithCancels(t, st)
	b := mkBlocks("subscribe-starts-over", 2)
	kA, kB := b[0].Cid(), b[1].Cid()
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, kA))
	release := st.stall(t, kB)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	subscribed := make(chan error, 1)
	go func() { subscribed <- s.Subscribe(cctx, kA, kB) }()
	require.Equal(t, kB, <-st.entered)

	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[:1]}), "A is not reserved: the Publish goes on")
	require.Equal(t, []cid.Cid{kA}, cancels.take(), "the Publish ended s's want of A")
	if ctxDone {
		cancel()
		release() // the commit finds A no longer wanted
		require.ErrorIs(t, <-subscribed, context.Canceled)
		require.False(t, s.Wants(kA))
		require.False(t, s.Wants(kB))
		require.Equal(t, []blocks.Block{b[0]}, recv(t, s).Blocks, "A from the Publish, and nothing else")
		require.Empty(t, s.Messages())
		require.Empty(t, cancels.take())
		return
	}
	st.mu.Lock()
	delete(st.stalled, kB) // the next attempt's Get of B does not stall
	st.mu.Unlock()
	release()
	require.NoError(t, <-subscribed)

	var got []cid.Cid
	for len(s.Messages()) > 0 {
		m := <-s.Messages()
		got = append(got, keysOf(m.Blocks)...)
	}
	require.Equal(t, []cid.Cid{kA, kA}, got, "A from the Publish, then from the blockstore for the Subscribe's new want")
	require.False(t, s.Wants(kA))
	require.True(t, s.Wants(kB))
	require.Empty(t, cancels.take(), "a key found by its Subscribe was never wanted again")
}

// A Subscribe waits for no blockstore call on a key its subscription wants
// already, for which it does nothing: s.Subscribe(A, B) goes on while a
// PutMany of A stalls, and wants B (G11). It once waited on every key it
// named (review).
func TestIO_SubscribeWaitsForNoKeyItWantsAlready(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("subscribe-waits-not", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA))
		release, published := st.publishStalled(t, n, b[0]) // A reserved

		subscribed := make(chan error, 1)
		go func() { subscribed <- s.Subscribe(ctx, kA, kB) }()
		synctest.Wait()
		select {
		case err := <-subscribed:
			require.NoError(t, err)
		default:
			release()
			require.NoError(t, <-subscribed)
			t.Fatal("s.Subscribe(A, B), s wanting A, waited for the stalled PutMany of A (G11)")
		}
		require.True(t, s.Wants(kB))
		release()
		require.NoError(t, <-published)
		require.False(t, s.Wants(kA), "the Publish delivered A")
		require.Equal(t, b[0].Cid(), (<-s.Messages()).Blocks[0].Cid())
	})
}

// A waiting Release(A, B) marks A while s wants A. A's want then ends by
// delivery (an older Publish of A), and the Release goes on waiting for a
// stalled PutMany of B. Its mark on A goes dormant (op.holds, op.dormant):
// a later Subscribe of A by another subscription does not wait for the
// stalled PutMany of B (G11). It once did: only a close's marks went
// dormant (review).
func TestIO_WaitingReleaseLetsGoOfAKeyNoLongerWanted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("review4-stale-release-mark", 2)
		bA, bB := b[0], b[1]
		kA, kB := bA.Cid(), bB.Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		releaseB, pubB := st.publishStalled(t, n, bB) // B reserved, stalled
		releaseA, pubA := st.publishStalled(t, n, bA) // A reserved, stalled

		released := make(chan []cid.Cid, 1)
		go func() { released <- s.Release(kA, kB) }()
		synctest.Wait() // asleep on A's reservation, A and B marked

		releaseA() // A delivered to s: s's want of A ends
		require.NoError(t, <-pubA)
		synctest.Wait() // the Release woke, and sleeps again on B
		require.False(t, s.Wants(kA))
		require.True(t, s.Wants(kB))

		other := mustSub(t, n, 2)
		done := make(chan error, 1)
		go func() { done <- other.Subscribe(ctx, kA) }()
		synctest.Wait()
		select {
		case err := <-done:
			require.NoError(t, err)
		default:
			releaseB()
			require.NoError(t, <-done)
			t.Errorf("Subscribe(A) by another subscription waited for a stalled PutMany of B, behind the stale mark on A of a Release whose subscription no longer wants A (G11)")
		}
		releaseB()
		require.NoError(t, <-pubB)
		got := <-released
		require.Empty(t, got, "B was delivered by its Publish before the Release")
	})
}

// An Unsubscribe(A) goes on at once while older operations that need A wait
// for other keys: O = Publish(X, A), for a stalled PutMany of X, and W =
// Publish(C, A), younger, for a stalled PutMany of C. Both found A busy too
// (reserved by Y's Get), but each marks only the key it sleeps for, the least
// of those it must wait for (Notifier.markBusy): once Y lets go of A, O's
// mark moves to X and W's to C, and nothing holds A up (G11). Then O and W
// go on and deliver nothing to s, whose want of A has ended.
//
// This test once pinned the nudge of an Unsubscribe(A) asleep behind W's
// mark on A, kept while W slept on C, when its want of A ended (review).
// With one mark per waiter, on the key it sleeps for, that scene no longer
// arises: an operation finds a waiter's mark on a key only while the key's
// reservation holds the waiter up, and it then sleeps on the reserver
// itself (Notifier.claimant), whose release, the only way the want of a
// reserved key can end, wakes it.
func TestIO_UnsubscribeGoesOnOnceTheWaitersLetGoOfItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("review4-unsub-not-woken", 3)
		bA, bX, bC := b[0], b[1], b[2]
		kA := bA.Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA))
		releaseX, pubX := st.publishStalled(t, n, bX) // X reserved, stalled
		releaseC, pubC := st.publishStalled(t, n, bC) // C reserved, stalled
		_, releaseY, subY := st.reserveByGet(t, n, 2, kA, mkBlocks("review4-unsub-y", 1)[0].Cid())

		pubO := make(chan error, 1) // O: waits for X and A
		go func() { pubO <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bX, bA}}) }()
		synctest.Wait()
		pubW := make(chan error, 1) // W: younger than O, waits for C and A
		go func() { pubW <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bC, bA}}) }()
		synctest.Wait()
		releaseY() // A free: O waits for X alone, W for C alone
		require.NoError(t, <-subY)
		synctest.Wait()
		require.EqualValues(t, 2, n.waiting.Load(), "O and W wait")

		unsubscribed := make(chan error, 1)
		go func() { s.Unsubscribe(kA); unsubscribed <- nil }()
		returnsNow(t, unsubscribed, func() { releaseX(); releaseC() },
			"Unsubscribe(A) waited for a stalled PutMany of X or C, behind the mark on A of a waiter that no longer waits for A (G11)")
		require.False(t, s.Wants(kA))
		require.EqualValues(t, 2, n.waiting.Load(), "O and W still wait")

		releaseX()
		require.NoError(t, <-pubX)
		require.NoError(t, <-pubO)
		releaseC()
		require.NoError(t, <-pubC)
		require.NoError(t, <-pubW)
		synctest.Wait()
		none(t, s) // the Unsubscribe took effect before O's delivery of A
	})
}

// A Subscribe(A) goes on at once while older operations that need A wait
// for other keys: O = s.Subscribe(A, Z), for a stalled PutMany of Z, and W
// = Publish(C, A), younger, for a stalled PutMany of C. Both found A busy
// too (reserved by Y's Get), but each marks only the key it sleeps for
// (Notifier.markBusy): once Y lets go of A, nothing holds A up (G11), and
// the Subscribe records s's want of A before O does. Then O finds Z, and W
// delivers A to s, once (G2).
//
// This test once pinned the nudge of a Subscribe(A) asleep behind W's mark
// on A, kept while W slept on C, when its subscription started wanting A
// (by O; review). With one mark per waiter, on the key it sleeps for, that
// scene no longer arises (TestIO_UnsubscribeGoesOnOnceTheWaitersLetGoOfItsKey).
func TestIO_SubscribeGoesOnOnceTheWaitersLetGoOfItsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("subscribe-wakes-want-begins", 3)
		bA, bZ, bC := b[0], b[1], b[2]
		kA, kZ := bA.Cid(), bZ.Cid()
		s := mustSub(t, n, 1)
		releaseZ, pubZ := st.publishStalled(t, n, bZ) // Z reserved, stalled
		releaseC, pubC := st.publishStalled(t, n, bC) // C reserved, stalled
		_, releaseY, subY := st.reserveByGet(t, n, 2, kA, mkBlocks("subscribe-wakes-y", 1)[0].Cid())

		older := make(chan error, 1) // O: waits for Z and A
		go func() { older <- s.Subscribe(ctx, kA, kZ) }()
		synctest.Wait()
		pubW := make(chan error, 1) // W: younger than O, waits for C and A
		go func() { pubW <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bC, bA}}) }()
		synctest.Wait()
		releaseY() // A free: O waits for Z alone, W for C alone
		require.NoError(t, <-subY)
		synctest.Wait()
		require.EqualValues(t, 2, n.waiting.Load(), "O and W wait")

		younger := make(chan error, 1)
		go func() { younger <- s.Subscribe(ctx, kA) }()
		returnsNow(t, younger, func() { releaseZ(); releaseC() },
			"Subscribe(A) waited for a stalled PutMany of Z or C, behind the mark on A of a waiter that no longer waits for A (G11)")
		require.True(t, s.Wants(kA))
		require.EqualValues(t, 2, n.waiting.Load(), "O and W still wait")

		releaseZ() // P_Z, then O go on: O finds Z
		require.NoError(t, <-pubZ)
		require.NoError(t, <-older)
		releaseC() // W delivers A to s
		require.NoError(t, <-pubC)
		require.NoError(t, <-pubW)
		synctest.Wait()
		require.False(t, s.Wants(kA))
		var got []cid.Cid
		for len(got) < 2 && len(s.Messages()) > 0 {
			for _, blk := range recv(t, s).Blocks {
				got = append(got, blk.Cid())
			}
		}
		require.ElementsMatch(t, []cid.Cid{kZ, kA}, got, "O finds Z, W delivers A")
		none(t, s)
	})
}

// A Subscribe(A) by another subscription goes on at once while two
// Subscribes of s that need A wait for other keys: O = s.Subscribe(A, Z),
// for a stalled PutMany of Z, and X = s.Subscribe(B, A), younger, for a
// stalled PutMany of B. Both found A busy too (reserved by Y's Get), but
// each marks only the key it sleeps for (Notifier.markBusy): once Y lets go
// of A, nothing holds A up (G11). Then O records s's want of A, and X, once
// B's PutMany returns, goes on.
//
// This test once pinned that X's mark on A, kept while X slept on B, went
// dormant as s started wanting A (by O), waking the Subscribe of another
// subscription asleep behind it (review). With one mark per waiter, on the
// key it sleeps for, that scene no longer arises
// (TestIO_UnsubscribeGoesOnOnceTheWaitersLetGoOfItsKey).
func TestIO_OtherSubscribeGoesOnOnceTheWaitersLetGoOfTheKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("subscribe-lets-go-want-begins", 3)
		bA, bZ, bB := b[0], b[1], b[2]
		kA, kZ, kB := bA.Cid(), bZ.Cid(), bB.Cid()
		s := mustSub(t, n, 1)
		releaseZ, pubZ := st.publishStalled(t, n, bZ) // Z reserved, stalled
		releaseB, pubB := st.publishStalled(t, n, bB) // B reserved, stalled
		_, releaseY, subY := st.reserveByGet(t, n, 3, kA, mkBlocks("subscribe-lets-go-y", 1)[0].Cid())
		older := make(chan error, 1) // O: waits for Z and A
		go func() { older <- s.Subscribe(ctx, kA, kZ) }()
		synctest.Wait()
		waiting := make(chan error, 1) // X: younger than O, waits for B and A
		go func() { waiting <- s.Subscribe(ctx, kB, kA) }()
		synctest.Wait()
		releaseY() // A free: O waits for Z alone, X for B alone
		require.NoError(t, <-subY)
		synctest.Wait()
		require.EqualValues(t, 2, n.waiting.Load(), "O and X wait")

		other := mustSub(t, n, 2)
		done := make(chan error, 1)
		go func() { done <- other.Subscribe(ctx, kA) }()
		returnsNow(t, done, func() { releaseZ(); releaseB() },
			"Subscribe(A) by another subscription waited for a stalled PutMany of Z or B, behind the mark on A of a waiter that no longer waits for A (G11)")
		require.True(t, other.Wants(kA))
		require.EqualValues(t, 2, n.waiting.Load(), "O and X still wait")

		releaseZ() // P_Z, then O go on: O records s's want of A
		require.NoError(t, <-pubZ)
		require.NoError(t, <-older)
		synctest.Wait()
		require.True(t, s.Wants(kA))
		select {
		case err := <-waiting:
			t.Fatalf("X returned %v while B's PutMany, which it waits for, is stalled", err)
		default:
		}
		releaseB()
		require.NoError(t, <-pubB)
		require.NoError(t, <-waiting)
		require.True(t, s.Wants(kA))
		require.True(t, other.Wants(kA))
	})
}

// A Subscribe that starts over (commitSubscribe) keeps its place: it is as
// old as the call. X = s.Subscribe(A, B) checks B, with A held as s wants
// it; W = Publish(A, C), which starts later, waits for a stalled PutMany of
// C, marking A; a Publish of A ends s's want of A during X's check, so X
// starts over and needs A. It must not wait behind W's mark, for the
// PutMany of C. Found by review: the new attempt took a new, younger id.
func TestIO_SubscribeKeepsItsPlaceWhenItStartsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("start-over-keeps-place", 3)
		bA, bB, bC := b[0], b[1], b[2]
		kA, kB := bA.Cid(), bB.Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA))
		releaseA, pubA := st.publishStalled(t, n, bA) // A reserved, stalled; delivers A to s

		releaseB := st.stall(t, kB)
		x := make(chan error, 1) // A held, not reserved; its Get of B stalls
		go func() { x <- s.Subscribe(ctx, kA, kB) }()
		require.Equal(t, kB, <-st.entered)
		releaseC, pubC := st.publishStalled(t, n, bC)
		w := make(chan error, 1) // younger than X: waits for A and C, marking both
		go func() { w <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA, bC}}) }()
		synctest.Wait()

		releaseA() // ends s's want of A
		require.NoError(t, <-pubA)
		require.Equal(t, []blocks.Block{bA}, recv(t, s).Blocks)
		synctest.Wait() // W still waits, for C
		st.mu.Lock()
		delete(st.stalled, kB) // the next attempt's Get of B does not stall
		st.mu.Unlock()
		releaseB() // X starts over, needing A
		synctest.Wait()
		select {
		case err := <-x:
			require.NoError(t, err)
		default:
			releaseC()
			require.NoError(t, <-x)
			t.Fatal("Subscribe(A, B) started over behind Publish(A, C), which started after it, and waited for its stalled PutMany of C")
		}
		require.Equal(t, []blocks.Block{bA}, recv(t, s).Blocks, "X's new attempt finds A stored")
		require.True(t, s.Wants(kB))
		releaseC()
		require.NoError(t, <-pubC)
		require.NoError(t, <-w)
	})
}

// A waiting Subscribe of a subscription that ends wakes and returns: it has
// nothing left to do. X = s.Subscribe(B, A) waits for a stalled PutMany of
// B, marking A; an older Subscribe makes s want A, so X's mark on A holds
// nobody up; then Remove ends s's want of A, and the mark holds again, but
// X's wait is over. It must not sleep on until the PutMany of B returns,
// holding up another subscription's Subscribe of A meanwhile (G11). Found
// by review: the close ends only s's wants, which woke nothing of X.
func TestIO_WaitingSubscribeWakesWhenItsSubscriptionEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("waiting-subscribe-ends", 3)
		bA, bZ, bB := b[0], b[1], b[2]
		kA, kZ, kB := bA.Cid(), bZ.Cid(), bB.Cid()
		s := mustSub(t, n, 1)
		releaseZ, pubZ := st.publishStalled(t, n, bZ)
		releaseB, pubB := st.publishStalled(t, n, bB)

		older := make(chan error, 1) // waits for Z, marking A
		go func() { older <- s.Subscribe(ctx, kA, kZ) }()
		synctest.Wait()
		waiting := make(chan error, 1) // X: waits for B, marking A
		go func() { waiting <- s.Subscribe(ctx, kB, kA) }()
		synctest.Wait()
		releaseZ() // s wants A: X's mark on A holds nobody up
		require.NoError(t, <-pubZ)
		require.NoError(t, <-older)
		synctest.Wait()
		require.True(t, s.Wants(kA))

		s.Remove() // ends s's want of A: X's mark on A holds again
		synctest.Wait()
		select {
		case err := <-waiting:
			require.ErrorIs(t, err, ErrClosed)
		default:
			releaseB()
			require.ErrorIs(t, <-waiting, ErrClosed)
			t.Fatal("Subscribe(B, A) of a removed subscription slept on until the stalled PutMany of B returned (G11)")
		}
		other := mustSub(t, n, 2)
		require.NoError(t, other.Subscribe(ctx, kA), "nothing holds A up")
		require.True(t, other.Wants(kA))
		releaseB()
		require.NoError(t, <-pubB)
	})
}

// requireNoWaiters checks that no shard of n holds a mark or a reservation,
// and that no subscription of subs has a Subscribe asleep (addSleeper).
func requireNoWaiters(t *testing.T, n *Notifier, subs ...*Subscription) {
	t.Helper()
	for i := range n.shards {
		n.shards[i].mu.Lock()
		marks, free := len(n.shards[i].idx.marks), n.shards[i].idx.res.empty()
		n.shards[i].mu.Unlock()
		require.Zero(t, marks, "shard %d: marks", i)
		require.True(t, free, "shard %d: reservations", i)
	}
	for _, s := range subs {
		s.mu.Lock()
		asleep := len(s.asleep)
		s.mu.Unlock()
		require.Zero(t, asleep, "subscription %d: Subscribes asleep", s.ID())
	}
}

// The other ends of a subscription wake its waiting Subscribe too
// (markClosed, whichever path ends it): a Remove of a subscription that
// wants nothing, which takes no shard lock, and a slow-consumer end. The
// Subscribe returns that end while the PutMany it waited for is stalled.
func TestIO_WaitingSubscribeWakesAtEveryEnd(t *testing.T) {
	for _, how := range []string{"idle remove", "slow consumer"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n, _ := newWithCancels(t, st, WithBufferSize(1), WithMaxPending(1))
				b := mkBlocks("waiting-subscribe-every-end", 3)
				kA, kB, kH := b[0].Cid(), b[1].Cid(), b[2].Cid()
				s := mustSub(t, n, 1)
				if how == "slow consumer" {
					require.NoError(t, s.Subscribe(ctx, kH))
				}
				releaseB, pubB := st.publishStalled(t, n, b[1])
				waiting := make(chan error, 1)
				go func() { waiting <- s.Subscribe(ctx, kB, kA) }()
				synctest.Wait()
				want := ErrClosed
				if how == "idle remove" {
					s.Remove()
				} else {
					want = ErrSlowConsumer
					for i := 0; s.Err() == nil; i++ {
						require.Less(t, i, 10, "s never overflowed")
						require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kH}}))
						synctest.Wait()
					}
				}
				synctest.Wait()
				select {
				case err := <-waiting:
					require.ErrorIs(t, err, want)
				default:
					releaseB()
					err := <-waiting
					t.Fatalf("a Subscribe of a subscription ended by %s slept on until the stalled PutMany of kB returned (G11), then returned %v", how, err)
				}
				releaseB()
				require.NoError(t, <-pubB)
				requireNoWaiters(t, n, s)
			})
		})
	}
}
