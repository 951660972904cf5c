package notifier

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// G6: a subscription that a Publish overflowed past WithMaxPending reports
// ErrSlowConsumer, and is counted as one, even when a Remove or a Close ends
// it between the overflow and that Publish's own end of it. Messages were
// dropped for its slowness from the overflow on; an Err of nil (Remove) or
// ErrClosed (Close) would hide that from the consumer, and the slow consumer
// from the log and slow_consumers_total.
//
// The Publish that overflows the subscription also ends the last want of
// another key, in another shard; its cancel function, which runs before the
// Publish ends its slow consumers, waits until the Remove or Close returned.
func TestSubscription_OverflowedThenEndedByAnotherCallIsASlowConsumer(t *testing.T) {
	for _, end := range []string{"Remove", "Close"} {
		t.Run(end, func(t *testing.T) {
			reg := promtest.Registry(t)
			synctest.Test(t, func(t *testing.T) {
				h := overflowAndHold(t, memStore())
				n, slow := h.n, h.slow
				closed := make(chan error, 1)
				if end == "Remove" {
					slow.Remove()
				} else {
					// Close ends every subscription, then waits for the
					// operations in flight (barrier): for the Publish.
					go func() { closed <- n.Close() }()
					waitWaiters(t, shardLock(n, h.other.Cid()), 1) // held by the Publish in its cancel function
				}
				require.ErrorIs(t, slow.Err(), ErrSlowConsumer, "Err after the %s, the overflowing Publish still in its cancel function", end)
				h.release()
				require.NoError(t, <-h.published)
				if end == "Close" {
					require.NoError(t, <-closed)
				}
				require.ErrorIs(t, slow.Err(), ErrSlowConsumer, "Err after the overflowing Publish returned")
				require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(
					exposition("counter", promPrefix+"slow_consumers_total", "Subscriptions ended as slow consumers (past WithMaxPending).", 1)),
					promPrefix+"slow_consumers_total"))
				require.Equal(t, []blocks.Block{h.other}, recv(t, h.last).Blocks)
				require.NoError(t, n.Close())
			})
		})
	}
}

// G6, G8 and G5 between an overflow and the end it causes: a Publish that
// overflows a subscription past WithMaxPending drops its later messages at
// once but ends it only at its own end, after its cancel function, in one
// step with its wants (an end takes effect at one instant; see
// TestSlowConsumerEnd_AtomicWithItsWants). A Subscribe in between meets a
// live subscription: it returns nil, adds its wants and takes its found
// blocks, dropped as every message of that window is, which Err's
// ErrSlowConsumer then reports. The end must take those wants with it, each
// reported to the cancel function (G5), and leave the index empty (G8).
func TestSubscription_SubscribeBetweenOverflowAndEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stored int // of the keys subscribed, those stored first
		keys   int
	}{
		{"one stored key", 1, 1},         // subscribeOne's hit: commitHit
		{"one missing key", 0, 1},        // subscribeOne's miss: commitWant
		{"two stored keys", 2, 2},        // the general path: want hands them to s
		{"a stored and a missing", 1, 2}, // the general path: want records one
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				bs := memStore()
				h := overflowAndHold(t, bs)
				keys := keysAwayFromHeldShards(t, h, "between overflow and end: "+tc.name, tc.keys)
				readQueuedBeforeOverflow(t, h.slow)
				require.NoError(t, bs.PutMany(ctx, keys[:tc.stored]))
				require.NoError(t, h.slow.Subscribe(ctx, keysOf(keys)...), "the subscription is live until the overflowing Publish ends it")
				require.NoError(t, h.slow.Err())
				for _, b := range keys[tc.stored:] {
					require.True(t, h.slow.Wants(b.Cid()))
				}
				endHeldOverflow(t, h, keys[tc.stored:])
				require.NoError(t, h.n.Close())
			})
		})
	}
}

// keysAwayFromHeldShards returns count blocks named by tag whose keys are
// neither in h.k's shard nor in h.other's, which the held Publish holds
// through its cancel function, so that a Subscribe of them does not wait
// for it.
func keysAwayFromHeldShards(t *testing.T, h *heldOverflow, tag string, count int) []blocks.Block {
	t.Helper()
	var keys []blocks.Block
	for _, b := range keysInOtherShards(h.n, h.k, tag, 4*count) {
		if len(keys) < count && h.n.shardOf(b.Cid()) != h.n.shardOf(h.other.Cid()) {
			keys = append(keys, b)
		}
	}
	require.Len(t, keys, count)
	return keys
}

// readQueuedBeforeOverflow reads what slow had queued before the overflow
// (its buffer, the message drain holds, the backlog): out has room, so a
// found block that were handed to slow would wait there.
func readQueuedBeforeOverflow(t *testing.T, slow *Subscription) {
	t.Helper()
	for i := range 3 {
		require.Equal(t, fmt.Sprint(i), recv(t, slow).From)
		synctest.Wait() // drain has moved its next message to out, or ended
	}
}

// endHeldOverflow lets h's Publish go on and checks the end it then makes of
// slow: ErrSlowConsumer, no message after the overflow, no want left in the
// index (last's subscription stays), and the cancel function told of k and
// of missing, the keys slow came to want between the overflow and the end
// (G5, G8).
func endHeldOverflow(t *testing.T, h *heldOverflow, missing []blocks.Block) {
	t.Helper()
	h.release()
	require.NoError(t, <-h.published)
	require.ErrorIs(t, h.slow.Err(), ErrSlowConsumer)
	for m := range h.slow.Messages() {
		t.Errorf("a message reached the subscription after it overflowed: %+v", m)
	}
	require.Equal(t, Stats{Subscriptions: 1}, h.n.Stats(), "the end left wants in the index") // last's
	want := append([]cid.Cid{h.k}, keysOf(missing)...)
	require.Equal(t, sorted(want...), h.cancels.take(), "the end's cancels")
}

// heldOverflow is a Notifier with a subscription, slow, that a Publish has
// overflowed past WithMaxPending (1, with a buffer of 1) and not ended yet:
// the Publish waits in its cancel function, for the end of last's want of
// other (in another shard than k, slow's key), until release is called, and
// then sends its error to published. See overflowAndHold.
type heldOverflow struct {
	n          *Notifier
	k          cid.Cid
	other      blocks.Block
	slow, last *Subscription
	published  chan error
	release    func()    // idempotent
	cancels    cancelLog // the keys of the cancel function's calls after the Publish's
}

// overflowAndHold builds a heldOverflow over bs, with the metrics of
// WithMetrics(kuboScope()) and a cancel function that holds only the first
// call, the overflowing Publish's, and records the others. It runs in a
// synctest bubble; release is also called when the test ends, so that the
// bubble never ends with the Publish blocked.
func overflowAndHold(t *testing.T, bs Blockstore) *heldOverflow {
	t.Helper()
	ctx := context.Background()
	inCancel, release := make(chan struct{}), make(chan struct{})
	h := &heldOverflow{published: make(chan error, 1), release: sync.OnceFunc(func() { close(release) })}
	t.Cleanup(h.release)
	var calls atomic.Int32
	h.n = New(bs, WithMetrics(kuboScope()), WithBufferSize(1), WithMaxPending(1),
		WithCancelFunc(func(keys []cid.Cid) {
			if calls.Add(1) == 1 { // the Publish's (other); later calls go through
				close(inCancel)
				<-release
				return
			}
			h.cancels.record(keys)
		}))
	h.k = blocks.NewBlock([]byte("overflow race: the laggard's key")).Cid()
	h.other = keysInOtherShards(h.n, h.k, "overflow race: another key", 1)[0]
	h.slow, h.last = mustSub(t, h.n, 1), mustSub(t, h.n, 2)
	require.NoError(t, h.slow.Subscribe(ctx, h.k))
	require.NoError(t, h.last.Subscribe(ctx, h.other.Cid()))
	fillBacklog(t, h.n, h.k)
	go func() { // overflows slow; ends last's want of other: the cancel function
		h.published <- h.n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{h.k}, Blocks: []blocks.Block{h.other}})
	}()
	<-inCancel
	return h
}

// G6 and G11: a Publish that overflows a subscription past WithMaxPending
// does not wait for an unrelated stalled PutMany to end it. s wants kA and
// kB; a Publish of kA's block stalls in PutMany, kA reserved; a Publish of a
// HAVE of kB overflows s. Ending s needs kA's shard free of reservations, so
// the end cannot happen now: the overflowing Publish leaves it pending with
// the Publish of kA, which finishes it once its PutMany returns. Until then
// s is live (Err nil, still wanting kB: the end takes effect at one
// instant); then Messages() closes, Err reports ErrSlowConsumer, s's wants
// end, the cancel function gets kA (delivered by its Publish) and kB (the
// end), and the index is empty. A Remove or a Close of s while the end is
// pending waits for it (as a close waits for an older waiting close), and
// Err stays ErrSlowConsumer; Close leaves no pending end and no goroutine
// (synctest.Test fails if one is left in the bubble).
func TestOverflow_PublishDoesNotWaitForAStalledPutManyToEndTheSlowConsumer(t *testing.T) {
	for _, end := range []string{"pending end alone", "Remove", "Close"} {
		t.Run(end, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n, cancels := newWithCancels(t, st, WithBufferSize(1), WithMaxPending(1))
				b := mkBlocks("pending close", 2)
				kA, kB := b[0].Cid(), b[1].Cid()
				s, release, published := atBoundBehindA(t, n, st, b)
				overflow := make(chan error, 1)
				go func() { overflow <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kB}}) }()
				returnsNow(t, overflow, release, "the Publish that overflowed s waited for the stalled PutMany of kA to end s")
				require.NoError(t, s.Err(), "the end is pending: Err changes with Messages() and the wants")
				require.True(t, s.Wants(kB), "the end is pending")
				requireStillStalled(t, published)
				ended := endWhileEndPending(t, end, n, s)

				release()
				require.NoError(t, <-published)
				if ended != nil {
					require.NoError(t, <-ended)
				}
				synctest.Wait()
				requireQueuedThenClosed(t, s)
				require.ErrorIs(t, s.Err(), ErrSlowConsumer)
				require.False(t, s.Wants(kA))
				require.False(t, s.Wants(kB))
				require.Equal(t, sorted(kA, kB), cancels.take(), "the cancel function gets kA (delivered) and kB (the end)")
				requireIndexEmpty(t, n)
				require.NoError(t, n.Close())
			})
		})
	}
}

// requireStillStalled checks that the Publish whose PutMany stalls, which
// sends its error to published, has not returned.
func requireStillStalled(t *testing.T, published chan error) {
	t.Helper()
	select {
	case err := <-published:
		t.Fatalf("setup: the stalled Publish of kA returned %v", err)
	default:
	}
}

// endWhileEndPending starts the operation that the subtest end names to end
// s while its slow-consumer end is pending, asleep in it: a Remove of s or a
// Close of n, whose result it returns; for "pending end alone", it starts
// nothing and returns nil.
func endWhileEndPending(t *testing.T, end string, n *Notifier, s *Subscription) (ended chan error) {
	t.Helper()
	switch end {
	case "Remove":
		ended = goAsleep(t, "Remove", func() error { s.Remove(); return nil })
	case "Close":
		ended = goAsleep(t, "Close", n.Close)
	}
	return ended
}

// requireQueuedThenClosed reads from s what was queued before the overflow,
// at most three messages in order, then checks that Messages() is closed.
func requireQueuedThenClosed(t *testing.T, s *Subscription) {
	t.Helper()
	for i := range 3 { // what was queued before the overflow, then the close
		m, ok := <-s.Messages()
		if !ok {
			break
		}
		require.Equal(t, fmt.Sprint(i), m.From)
	}
	_, ok := <-s.Messages()
	require.False(t, ok, "Messages() is closed once the pending end ran")
}

// G11: a slow-consumer end left pending behind an older waiter's mark on kA
// completes as soon as its subscription's want of kA ends, by the operation
// that ends it (op.letGo), not when that waiter goes on, here to wait for a
// stalled PutMany of kB, a key the subscription never wanted. s2 wants kA
// and kC; a Publish of HAVEs of kA, kB and a key in shard 0 marks kA, the
// least of its busy keys (kA reserved by a Subscribe of u whose Get
// stalled, kB by a stalled PutMany), and is held, woken, with that mark
// (freezeMarkOnA); a HAVE of kC overflows s2, whose end finds kA marked and
// is left pending with that Publish. An Unsubscribe of kA by s2, older than
// both and held until then at shard 1, then ends the want: the end goes on
// before the Unsubscribe returns. A waiter marks only the key it sleeps for
// (Notifier.markBusy), so the Publish's mark on kA, with kA reserved by
// nobody, lasts only while it takes its locks again; the test stretches
// that moment, where the scene first had it wait for kB with kA marked.
func TestOverflow_PendingEndGoesOnWhenItsWantOfTheBusyKeyEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(4), WithBufferSize(1), WithMaxPending(1))
		b := sortedInShard(n, "pending-want", 2, 4)
		bA, bB, bY, bC := b[0], b[1], b[2], b[3] // kA is the least
		kA, kB, kC := bA.Cid(), bB.Cid(), bC.Cid()
		kX0 := blockInShard(n, "pending-want-X0", 0, true).Cid()
		kX1 := blockInShard(n, "pending-want-X1", 1, true).Cid()
		s2 := mustSub(t, n, 2)
		require.NoError(t, s2.Subscribe(ctx, kA, kC))
		fillBacklog(t, n, kC)
		releaseB, pubB := st.publishStalled(t, n, bB)

		unblock1 := blockShard(t, n, nil, 1)
		older := make(chan struct{})
		go func() { defer close(older); s2.Unsubscribe(kA, kX1) }()
		waitWaiters(t, &n.shards[1].mu, 1)
		u, haves, unblock0 := st.freezeMarkOnA(t, n, kA, bY.Cid(), "Publish of HAVEs of kA, kB, kX0", func() error {
			return n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kA, kB, kX0}})
		})

		// No synctest.Wait while the Publish of HAVEs waits for shard 0: a
		// goroutine blocked on a mutex is not durably blocked, and the
		// bubble never settles.
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "3", Haves: []cid.Cid{kC}}), "overflows s2")
		require.NoError(t, s2.Err(), "setup: s2's end is pending behind the Publish of HAVEs")
		unblock1()
		<-older
		if s2.Err() == nil {
			unblock0()
			finishStalledPublishes(t, releaseB, pubB, haves)
			t.Fatal("s2's pending slow-consumer end waited for the Publish of HAVEs, which goes on to wait for a stalled PutMany of kB, a key s2 never wanted, after s2's want of kA ended (G11)")
		}
		require.ErrorIs(t, s2.Err(), ErrSlowConsumer)
		require.False(t, s2.Wants(kC))
		i := 0
		for m := range s2.Messages() { // what its buffer held before the overflow; then closed
			require.Equal(t, fmt.Sprint(i), m.From)
			i++
		}

		unblock0()
		finishStalledPublishes(t, releaseB, pubB, haves)
		u.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
	})
}

// finishStalledPublishes lets the stalled PutMany of kB go on (releaseB) and
// checks that both Publishes waiting for it, pubB's and the Publish of
// HAVEs, return nil.
func finishStalledPublishes(t *testing.T, releaseB func(), pubB, haves chan error) {
	t.Helper()
	releaseB()
	require.NoError(t, <-pubB)
	require.NoError(t, <-haves)
}

// A cancel function that panics in a pending slow-consumer end panics in the
// operation that completes the end, here the Publish whose stalled PutMany
// held it up, once that end is complete: s is ended, no lock stays held, and
// the Notifier goes on.
func TestOverflow_PendingEndsCancelPanicReachesTheOperationThatEndsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		b := mkBlocks("pending panic", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		var panicked atomic.Bool
		n := New(st, WithBufferSize(1), WithMaxPending(1), WithCancelFunc(func(keys []cid.Cid) {
			if slices.Contains(keys, kB) && !panicked.Swap(true) {
				panic("cancel")
			}
		}))
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		fillBacklog(t, n, kB)
		release := st.stall(t, kA)
		published := make(chan any, 1)
		go func() {
			defer func() { published <- recover() }()
			_ = n.Publish(ctx, ResponseMessage{Blocks: b[:1]})
		}()
		require.Equal(t, kA, <-st.entered)
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kB}}), "overflows s; its end is pending")
		require.NoError(t, s.Err())

		release()
		require.Equal(t, "cancel", <-published, "the panic of the cancel function reaches the Publish that completed the end")
		require.ErrorIs(t, s.Err(), ErrSlowConsumer)
		require.False(t, s.Wants(kB))
		requireIndexEmpty(t, n)
		w := mustSub(t, n, 2)
		require.NoError(t, w.Subscribe(ctx, kB), "no shard lock stays held")
		w.Remove()
		require.NoError(t, n.Close())
	})
}

// A Subscribe whose found block overflows its own subscription returns
// ErrSlowConsumer even while the end it causes is pending behind another
// operation (here a stalled PutMany of kB, which the subscription wants),
// not ErrClosed: the subscription is not closed yet, and Err says nil until
// the end.
func TestOverflow_SubscribeThatOverflowsItsSubscriptionSaysSoWhileTheEndIsPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st, WithBufferSize(1), WithMaxPending(1))
		b := mkBlocks("overflows itself", 3)
		kA, kB, kC := b[0].Cid(), b[1].Cid(), b[2].Cid()
		require.NoError(t, st.Blockstore.PutMany(ctx, b[2:]))
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		fillBacklog(t, n, kA)
		release, published := st.publishStalled(t, n, b[1]) // kB reserved

		require.ErrorIs(t, s.Subscribe(ctx, kC), ErrSlowConsumer, "the found block of kC overflowed s")
		require.NoError(t, s.Err(), "setup: the end is pending behind the PutMany of kB")
		require.Empty(t, cancels.take())

		release()
		require.NoError(t, <-published)
		require.ErrorIs(t, s.Err(), ErrSlowConsumer)
		require.Equal(t, sorted(kA, kB), cancels.take())
		requireIndexEmpty(t, n)
	})
}

// G11: a slow-consumer end left pending with (parked on) a waiter X, the
// claimant of kA by its mark, goes on once X's mark stops holding, not when
// X goes on, which here would then wait for a stalled PutMany of kB, a key
// the slow subscription never wanted. A Subscribe O of kA and kZ by s3
// waits for a stalled PutMany of kZ, with kZ marked; a younger one, X, of
// kB, kA and a key in shard 0, marks kA, the least of its busy keys, and is
// held, woken, with that mark (freezeMarkOnA). A HAVE of kC overflows slow,
// whose end finds kA marked by X and parks on X. Z's release lets O record
// s3's want of kA, so X's mark on kA no longer holds
// (shardIndex.wakeSubscribes): O, which made it so, resumes the end
// (op.letGo hands X's parked closes to it), and a Publish of kA then goes
// through. Found by review: X.letGo woke only X's sleepers, and a parked
// close is none, so the end, and a Publish of kA behind its mark, waited
// for X. A waiter marks only the key it sleeps for (Notifier.markBusy), so
// X's mark on kA, with kA reserved by nobody, lasts only while X takes its
// locks again; the test stretches that moment, where the scene first had X
// wait for kB with kA marked.
func TestOverflow_PendingEndGoesOnWhenItsClaimantsMarkStopsHolding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, n, slow, b := slowInShard1(t, "pending-dormant-claimant", 5)
		bA, bZ, bB, bY, bC := b[0], b[1], b[2], b[3], b[4] // kA is the least
		kA, kZ, kB, kC := bA.Cid(), bZ.Cid(), bB.Cid(), bC.Cid()
		kX0 := blockInShard(n, "pending-dormant-x", 0, true).Cid()
		s3 := mustSub(t, n, 1)
		releaseZ, pubZ := st.publishStalled(t, n, bZ) // kZ reserved, stalled
		releaseB, pubB := st.publishStalled(t, n, bB) // kB reserved, stalled
		older := goAsleep(t, "Subscribe O of kA and kZ", func() error { return s3.Subscribe(ctx, kA, kZ) })
		u, waiting, unblock0 := st.freezeMarkOnA(t, n, kA, bY.Cid(), "Subscribe X of kB, kA, kX0", func() error {
			return s3.Subscribe(ctx, kB, kA, kX0)
		})

		// Overflow slow: its end finds kA held by X's mark and parks on X.
		// No synctest.Wait while X waits for shard 0: a goroutine blocked on
		// a mutex is not durably blocked, and the bubble never settles.
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}), "overflows slow; returns at once: the end is left pending")
		require.NoError(t, slow.Err(), "setup: the end is pending, parked on X")

		releaseZ() // P_Z, then O go on: O records s3's want of A, X's mark on A goes dormant
		require.NoError(t, <-pubZ)
		require.NoError(t, <-older)
		require.True(t, s3.Wants(kA))
		endedEarly := slow.Err() != nil
		unblock0() // X goes on: kA is s3's now, and X waits for kB's PutMany
		synctest.Wait()

		// Nothing holds up kA now: X's mark is dormant, and the end's is gone
		// with the end, or, if it is still pending, holds up the Publish.
		pubA := make(chan error, 1)
		go func() { pubA <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA}}) }()
		synctest.Wait()
		var pubAEarly bool
		select {
		case err := <-pubA:
			require.NoError(t, err)
			pubAEarly = true
		default:
		}
		releaseB()
		require.NoError(t, <-pubB)
		require.NoError(t, <-waiting)
		if !pubAEarly {
			require.NoError(t, <-pubA)
		}
		require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
		if !endedEarly || !pubAEarly {
			t.Fatalf("pending slow-consumer end completed only after its claimant X went on, here to wait for a stalled PutMany of kB, a key its subscription never wanted (ended before release: %v; Publish of kA returned before release: %v) (G11)", endedEarly, pubAEarly)
		}
		s3.Remove()
		u.Remove()
		requireIndexEmpty(t, n)
	})
}

// G11, the same through wakeStaleMarks: the claimant X of kA, on which a
// pending slow-consumer end parks, is a waiting Unsubscribe of s2 (kB, kA
// and a key in shard 0), held, woken, with its mark on kA (freezeMarkOnA),
// and its mark on kA stops holding when an older Unsubscribe O of s2 (kA,
// kZ), let go by Z's release, ends s2's want of kA. O must resume the end
// (op.letGo hands X's parked closes to it), not leave it to X, which would
// then wait for a stalled PutMany of kB. Found by review of the hand-over,
// which the test above reaches only through wakeSubscribes. A waiter marks
// only the key it sleeps for (Notifier.markBusy), so X's mark on kA, with
// kA reserved by nobody, lasts only while X takes its locks again; the test
// stretches that moment, where the scene first had X wait for kB with kA
// marked.
func TestOverflow_PendingEndGoesOnWhenItsClaimantsWantEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, n, slow, b := slowInShard1(t, "pending-unsubscribe-claimant", 5)
		bA, bZ, bB, bY, bC := b[0], b[1], b[2], b[3], b[4] // kA is the least
		kA, kZ, kB, kC := bA.Cid(), bZ.Cid(), bB.Cid(), bC.Cid()
		kX0 := blockInShard(n, "pending-unsubscribe-x", 0, true).Cid()
		s2 := mustSub(t, n, 2)
		require.NoError(t, s2.Subscribe(ctx, kA, kB, kZ))
		go func() { // s2 takes the blocks of Z and B
			for range s2.Messages() {
			}
		}()
		releaseZ, pubZ := st.publishStalled(t, n, bZ) // kZ reserved, stalled
		releaseB, pubB := st.publishStalled(t, n, bB) // kB reserved, stalled
		older := goAsleep(t, "Unsubscribe O of kA and kZ", func() error { s2.Unsubscribe(kA, kZ); return nil })
		u, waiting, unblock0 := st.freezeMarkOnA(t, n, kA, bY.Cid(), "Unsubscribe X of kB, kA, kX0", func() error {
			s2.Unsubscribe(kB, kA, kX0)
			return nil
		})

		// No synctest.Wait while X waits for shard 0: a goroutine blocked on
		// a mutex is not durably blocked, and the bubble never settles.
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}), "overflows slow; returns at once: the end is left pending")
		require.NoError(t, slow.Err(), "setup: the end is pending, parked on X")

		releaseZ() // P_Z, then O go on: s2's want of A ends, X's mark on A stops holding
		require.NoError(t, <-pubZ)
		require.NoError(t, <-older)
		require.False(t, s2.Wants(kA))
		endedEarly := slow.Err() != nil
		unblock0()
		releaseB()
		require.NoError(t, <-pubB)
		require.NoError(t, <-waiting)
		require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
		require.True(t, endedEarly, "pending slow-consumer end completed only after its claimant X went on, here to wait for a stalled PutMany of kB, a key its subscription never wanted (G11)")
		s2.Remove()
		u.Remove()
		requireIndexEmpty(t, n)
	})
}

// G11, the same through wakeDelivered, for the pending close itself: slow's
// end parks on Q, the claimant of kA by its mark, a Publish of kA, kD and a
// key in shard 0 that marks kA, the least of its busy keys, and is held,
// woken, with that mark (freezeMarkOnA); let go, it would wait for a
// stalled PutMany of kD. An older Publish P of kA and kB, which waits for a
// stalled PutMany of kB with kB marked, goes on once kB is released and
// delivers kA to slow: the end no longer needs kA, and P must resume it
// (op.letGo, by the delivering operation), not leave it parked on Q until
// Q goes on. A waiter marks only the key it sleeps for (Notifier.markBusy),
// so Q's mark on kA, with kA reserved by nobody, lasts only while Q takes
// its locks again; the test stretches that moment, where the scene first
// had Q wait for kD with kA marked.
func TestOverflow_PendingEndGoesOnWhenTheBlockItWaitsForIsDelivered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, n, slow, b := slowInShard1(t, "pending-delivered-claimant", 5)
		bA, bB, bD, bY, bC := b[0], b[1], b[2], b[3], b[4] // slow wants b[0] and b[4]; kA is the least
		kA, kC := bA.Cid(), bC.Cid()
		kX0 := blockInShard(n, "pending-delivered-x", 0, true).Cid()
		releaseB, pubB := st.publishStalled(t, n, bB) // kB reserved, stalled
		releaseD, pubD := st.publishStalled(t, n, bD) // kD reserved, stalled
		pubP := goAsleep(t, "Publish P of kA and kB", func() error {
			return n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA, bB}})
		}) // kA free: P marks kB only
		u, pubQ, unblock0 := st.freezeMarkOnA(t, n, kA, bY.Cid(), "Publish Q of kA, kD, kX0", func() error {
			return n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA, bD}, Haves: []cid.Cid{kX0}})
		})

		// No synctest.Wait while Q waits for shard 0: a goroutine blocked
		// on a mutex is not durably blocked, and the bubble never settles.
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}), "overflows slow; returns at once: the end is left pending")
		require.NoError(t, slow.Err(), "setup: the end is pending, parked on Q")

		releaseB() // R_B, then P go on: P delivers kA to slow, and resumes the end before it returns (putOp)
		require.NoError(t, <-pubB)
		require.NoError(t, <-pubP)
		endedEarly := slow.Err() != nil
		unblock0()
		releaseD()
		require.NoError(t, <-pubD)
		require.NoError(t, <-pubQ)
		require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
		require.True(t, endedEarly, "pending slow-consumer end completed only after its claimant Q went on, here to wait for a stalled PutMany of kD, a key its subscription never wanted (G11)")
		u.Remove()
		requireIndexEmpty(t, n)
	})
}

// fillBacklog publishes three HAVEs of k, each once the bubble has settled:
// with WithBufferSize(1) and WithMaxPending(1) they fill a subscription that
// wants k (its buffer, the message its drain goroutine holds, the backlog),
// so that the next message for it pushes it past WithMaxPending.
// atBoundBehindA returns s, subscription 1 of n (WithBufferSize(1),
// WithMaxPending(1), over st), which wants A and B, the keys of b[0] and
// b[1], filled to its bound by HAVEs of B (fillBacklog), and A reserved by a
// Publish of b[0] stalled in its PutMany: the next message for s overflows
// it, and its end waits for A.
func atBoundBehindA(t *testing.T, n *Notifier, st *stallStore, b []blocks.Block) (s *Subscription, release func(), published chan error) {
	t.Helper()
	s = mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid(), b[1].Cid()))
	fillBacklog(t, n, b[1].Cid())
	release, published = st.publishStalled(t, n, b[0])
	return s, release, published
}

func fillBacklog(t *testing.T, n *Notifier, k cid.Cid) {
	t.Helper()
	for i := range 3 {
		seqHave(t, n, k, i)
		synctest.Wait() // drain, if started, has taken its message and waits for out
	}
}

// sortedInShard returns count blocks named by tag whose keys are in shard sh
// of n, sorted by KeyString: the least first, the order in which a waiter
// chooses the one key it marks (Notifier.markBusy, busyKey).
func sortedInShard(n *Notifier, tag string, sh int32, count int) []blocks.Block {
	out := make([]blocks.Block, count)
	for i := range out {
		out[i] = blockInShard(n, fmt.Sprintf("%s-%d", tag, i), sh, true)
	}
	slices.SortFunc(out, func(a, b blocks.Block) int { return cmpKey(a.Cid(), b.Cid()) })
	return out
}

// marksOn returns how many operations mark k, read under k's shard lock.
func marksOn(n *Notifier, k cid.Cid) int {
	sh := &n.shards[n.shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return len(sh.idx.marks[k])
}

// freezeMarkOnA makes run, a waiter X whose keys include kA, another key
// that a stalled call reserves, greater than kA, and one in shard 0, the
// lowest of its shards, mark kA while a pending end finds it: X finds kA
// reserved by a Subscribe of kA and y by u (id 3) whose Get of y stalls
// (reserveByGet), and the other key reserved, marks kA, the least, and
// sleeps for it; then the test holds shard 0 and lets that Get go on. X,
// woken, waits for shard 0 with its mark on kA still there; nothing else
// marks kA. A waiter marks only the key it sleeps for, so a mark on a key
// that nobody reserves, the scene of a pending end parked on a waiter,
// lasts only while the waiter, woken, takes its locks again: holding shard
// 0 stretches that moment. unblock0 lets X go on, to find its other key
// busy and wait for it. done gets run's result. The caller must have let
// the bubble settle, but for goroutines that wait for a shard lock other
// than 0's.
func (st *stallStore) freezeMarkOnA(t *testing.T, n *Notifier, kA, y cid.Cid, what string, run func() error) (u *Subscription, done chan error, unblock0 func()) {
	t.Helper()
	u, releaseY, subY := st.reserveByGet(t, n, 3, kA, y)
	asleep := n.waiting.Load()
	done = make(chan error, 1)
	go func() { done <- run() }()
	spinWaiting(t, n, asleep+1) // not synctest.Wait: the caller may hold a shard lock that another waits for
	require.Equal(t, 1, marksOn(n, kA), "setup: %s marks kA", what)
	unblock0 = blockShard(t, n, nil, 0)
	releaseY()
	require.NoError(t, <-subY)
	waitWaiters(t, &n.shards[0].mu, 1)
	require.Equal(t, 1, marksOn(n, kA), "setup: %s, woken, still marks kA", what)
	return u, done, unblock0
}

// slowInShard1 returns a Notifier of two shards with WithBufferSize(1) and
// WithMaxPending(1) over a stallStore, count blocks named by tag in shard 1
// sorted by KeyString (sortedInShard), and slow, a subscription of b[0],
// the least, and b[count-1], filled to its bound by HAVEs of b[count-1]
// (fillBacklog): the next message for it pushes it past WithMaxPending.
// Shard 0 is left for the key by which freezeMarkOnA holds a waiter.
func slowInShard1(t *testing.T, tag string, count int) (st *stallStore, n *Notifier, slow *Subscription, b []blocks.Block) {
	t.Helper()
	st = newStallStore()
	n, _ = newWithCancels(t, st, WithShards(2), WithBufferSize(1), WithMaxPending(1))
	b = sortedInShard(n, tag, 1, count)
	slow = mustSub(t, n, 10)
	require.NoError(t, slow.Subscribe(ctx, b[0].Cid(), b[count-1].Cid()))
	fillBacklog(t, n, b[count-1].Cid())
	return st, n, slow, b
}

// G11: a pending slow-consumer end parked on a waiter X, the claimant of kA
// by its mark, goes on once X moves its one mark away from kA, not when X
// goes on, here after a stalled PutMany of kB, a key the slow subscription
// never wanted. X, a Publish of HAVEs of kA, kB and a key in shard 0, or an
// Unsubscribe of those keys by s4, which wants them, or a Remove of s4,
// marks kA, the least of its busy keys, and sleeps for kA's reservation;
// that is released while X waits for shard 0 (freezeMarkOnA), and a HAVE of
// kC then overflows slow, whose end finds kA marked by X and parks on X. X,
// let go, finds kA free and kB reserved by a stalled PutMany, and moves its
// mark to kB (Notifier.markOnly; Subscription.markOne for the Remove).
// Nothing holds kA up any more; the end must go on then, by X (as op.letGo
// hands X's parked closes over when X's mark stops holding), not wait for X
// to go on after kB's PutMany.
//
// Fails at e48fcf2, all three: markOnly drops X's mark on kA (unmark) and
// wakes X's sleepers, but a parked close is none, and nothing takes X's
// parked list: the end waits for X's putOp. Without the held shard 0 the
// same happens whenever the end, resumed by kA's reserver, locks kA's
// shard before X, woken by the same release, does.
func TestOverflow_PendingEndGoesOnWhenItsClaimantMovesItsMark(t *testing.T) {
	for _, kind := range []string{"Publish of HAVEs", "Unsubscribe", "Remove"} {
		t.Run(kind, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st, n, slow, b := slowInShard1(t, "pending-moved-mark", 4)
				bA, bB, bY, bC := b[0], b[1], b[2], b[3]
				kA, kB, kC := bA.Cid(), bB.Cid(), bC.Cid()
				kX0 := blockInShard(n, "pending-moved-mark-x", 0, true).Cid()
				s4 := mustSub(t, n, 4) // X's, for an Unsubscribe or a Remove
				require.NoError(t, s4.Subscribe(ctx, kA, kB, kX0))
				releaseB, pubB := st.publishStalled(t, n, bB)
				u, waiting, unblock0 := st.freezeMarkOnA(t, n, kA, bY.Cid(), kind+" X of kA, kB, kX0", func() error {
					switch kind {
					case "Unsubscribe":
						s4.Unsubscribe(kA, kB, kX0)
					case "Remove":
						s4.Remove()
					default:
						return n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kA, kB, kX0}})
					}
					return nil
				})

				require.NoError(t, n.Publish(ctx, ResponseMessage{From: "3", Haves: []cid.Cid{kC}}), "overflows slow")
				require.NoError(t, slow.Err(), "setup: slow's end is pending, parked on X")
				unblock0() // X moves its mark to kB, and waits for kB's PutMany
				spinWaiting(t, n, 1)
				synctest.Wait()
				require.Equal(t, 1, marksOn(n, kB), "setup: X has moved its mark to kB")
				endedEarly := slow.Err() != nil
				finishStalledPublishes(t, releaseB, pubB, waiting)
				synctest.Wait()
				require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
				require.True(t, endedEarly, "the pending slow-consumer end, parked on X, waited for a stalled PutMany of kB, a key its subscription never wanted, after X had moved its mark off kA (G11)")
				s4.Remove()
				u.Remove()
				requireIndexEmpty(t, n)
			})
		})
	}
}

// G11, the same for a pending end that moves its own mark (markOne): slow2's
// end P2 parks on slow1's pending end P, the youngest older mark on kA; P is
// parked on the mark on kA of an older Subscribe O, held at kX's shard lock.
// Once O goes on, its putOp resumes P, which finds kA free and kB reserved by
// a stalled PutMany, moves its mark to kB and parks there. P2 must go on
// then, not wait for P, and so for the PutMany of kB, a key slow2 never
// wanted. Found by review of the one-mark rule.
func TestOverflow_PendingEndGoesOnWhenThePendingEndItParkedOnMovesItsMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st, WithShards(8), WithBufferSize(1), WithMaxPending(1))
		ab := sortedInShard(n, "move2-ab", 1, 2) // kA < kB, outside shard 0
		bB := ab[1]
		kA, kB := ab[0].Cid(), bB.Cid()
		kC := blockInShard(n, "move2-c", 0, false).Cid()
		kD := blockInShard(n, "move2-d", 0, false).Cid()
		kX := blockInShard(n, "move2-x", 0, true).Cid()
		kY := blockInShard(n, "move2-y", 0, false).Cid()

		slow1, slow2 := mustSub(t, n, 10), mustSub(t, n, 11)
		require.NoError(t, slow1.Subscribe(ctx, kA, kB, kD))
		require.NoError(t, slow2.Subscribe(ctx, kA, kC))
		fillBacklog(t, n, kD)
		fillBacklog(t, n, kC)

		releaseB, pubB := st.publishStalled(t, n, bB) // kB reserved, stalled
		u, releaseY, subY := st.reserveByGet(t, n, 3, kA, kY)
		s3 := mustSub(t, n, 4)
		subO := goAsleep(t, "Subscribe O of kA and kX", func() error { return s3.Subscribe(ctx, kA, kX) })

		// O wakes as Y goes on and waits for shard 0, its mark kept on kA.
		unblock0 := blockShard(t, n, nil, 0)
		releaseY()
		require.NoError(t, <-subY)
		waitWaiters(t, &n.shards[0].mu, 1)
		spinWaiting(t, n, 0)

		// Overflow slow1: P finds kA marked by O and kB reserved, marks kA
		// (the least) and parks on O. Overflow slow2: P2 finds kA marked by
		// O and P, and parks on P.
		for _, k := range []cid.Cid{kD, kC} {
			overflow := make(chan error, 1)
			go func() { overflow <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{k}}) }()
			require.NoError(t, <-overflow)
		}
		require.NoError(t, slow1.Err(), "setup: P is pending, parked on O")
		require.NoError(t, slow2.Err(), "setup: P2 is pending, parked on P")
		require.Equal(t, 3, marksOn(n, kA), "setup: O, P and P2 mark kA")

		unblock0() // O goes on and resumes P, which moves its mark to kB
		require.NoError(t, <-subO)
		synctest.Wait()
		require.NoError(t, slow1.Err(), "setup: P waits for kB")
		require.Equal(t, 1, marksOn(n, kB), "setup: P moved its mark to kB")

		endedEarly := slow2.Err() != nil
		releaseB()
		require.NoError(t, <-pubB)
		synctest.Wait()
		require.ErrorIs(t, slow1.Err(), ErrSlowConsumer)
		require.ErrorIs(t, slow2.Err(), ErrSlowConsumer)
		for _, s := range []*Subscription{u, s3} {
			s.Remove()
		}
		requireIndexEmpty(t, n)
		require.True(t, endedEarly, "slow2's pending end completed only after a stalled PutMany of kB, a key slow2 never wanted: it stayed parked on slow1's pending end after that one moved its mark off kA (G11)")
	})
}
