package notifier

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Tests of operations that wait for a blockstore call on their keys: a waiter
// is not overtaken, and holds up only the keys it found busy, through marks
// that stop holding when they go stale. stallStore is in io_test.go.

// A waiter is not overtaken on the key it waits for (Notifier.markBusy).
// u's Subscribe of kA and kX reserves kA for its Get, stalled on kX.
// s.Unsubscribe(kA, kB) (or Remove) waits, marking kA; a later Publish of kA
// waits too. Once u's Get returns, the waiter goes on first, and the
// Publish after it: taking kA first, the Publish would deliver kA to s,
// whose Unsubscribe began before it.
func TestIO_WaiterIsNotOvertaken(t *testing.T) {
	for _, tc := range markingWaits() {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := newOvertakeScene(t, false)
				waited, later := o.waitThenPublishKA(tc)
				require.EqualValues(t, 2, o.n.waiting.Load(), "the %s and the Publish wait for u", tc.name)

				o.releaseX()
				require.NoError(t, <-o.subU)
				done(t, waited, tc.name)
				require.NoError(t, <-later)
				synctest.Wait()
				if tc.name == "Unsubscribe" {
					require.Empty(t, o.s.Messages(), "s unsubscribed kA before the Publish")
				} else if m, ok := <-o.s.Messages(); ok {
					t.Errorf("s, removed before the Publish, got %v", m)
				}
				require.Equal(t, []blocks.Block{o.b[0]}, recv(t, o.u).Blocks)
			})
		})
	}
}

// A waiter holds up only the key it waits for, not a key it found busy
// before and that is free again (Notifier.markBusy: one mark). The scene of
// TestIO_WaiterIsNotOvertaken, with kB reserved too, by v's Subscribe of kB
// and kY, stalled on kY, and kA less than kB: the waiter marks kA and
// sleeps on u. A later Publish of kA waits for u. Once u's Get returns, the
// waiter waits for kB, moving its mark there, and the Publish of kA goes
// on at once, delivering kA to s too, whose Unsubscribe (or Remove) has not
// taken effect. When the waiter kept its mark on kA, the Publish waited
// for v's stalled Get of kY, a key it does not name (G11; review).
func TestIO_WaiterHoldsUpOnlyTheKeyItWaitsFor(t *testing.T) {
	for _, tc := range markingWaits() {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := newOvertakeScene(t, true)
				waited, later := o.waitThenPublishKA(tc)

				o.releaseX()
				require.NoError(t, <-o.subU)
				returnsNow(t, later, o.releaseY, "a Publish of kA waited behind the "+tc.name+
					" of kA and kB, which waits for v's stalled Get of kY (G11)")
				require.EqualValues(t, 1, o.n.waiting.Load(), "the %s waits for kB", tc.name)
				require.Equal(t, []blocks.Block{o.b[0]}, recv(t, o.s).Blocks, "s wanted kA: the %s had not ended it yet", tc.name)
				require.Equal(t, []blocks.Block{o.b[0]}, recv(t, o.u).Blocks)

				o.releaseY()
				require.NoError(t, <-o.subV)
				done(t, waited, tc.name)
				require.False(t, o.s.Wants(o.b[1].Cid()))
			})
		})
	}
}

// waitThenPublishKA starts tc's waiter, of kA and kB, and, once it sleeps
// on u's reservation of kA with kA marked, a later Publish of kA, which
// sleeps too. waited is closed when the waiter returns; later gets the
// Publish's result.
func (o *overtakeScene) waitThenPublishKA(tc markingWait) (waited chan struct{}, later chan error) {
	waited, later = make(chan struct{}), make(chan error, 1)
	go func() { defer close(waited); tc.wait(o.s, o.b[0].Cid(), o.b[1].Cid()) }()
	synctest.Wait()
	go func() { later <- o.n.Publish(ctx, ResponseMessage{From: "peer", Blocks: o.b[:1]}) }()
	synctest.Wait()
	return waited, later
}

// markingWait is an operation of s that waits for busy keys, marking them.
type markingWait struct {
	name string
	wait func(s *Subscription, keys ...cid.Cid)
}

// markingWaits are the waiters of TestIO_WaiterIsNotOvertaken: s.Remove and
// s.Unsubscribe of the keys.
func markingWaits() []markingWait {
	return []markingWait{
		{"Remove", func(s *Subscription, _ ...cid.Cid) { s.Remove() }},
		{"Unsubscribe", func(s *Subscription, keys ...cid.Cid) { s.Unsubscribe(keys...) }},
	}
}

// overtakeScene is the scene of TestIO_WaiterIsNotOvertaken: s wants kA and
// kB (b[0], b[1], kA the less); u's Subscribe of kA and kX reserves kA for
// its Get, stalled on kX, and, if asked, v's of kB and kY reserves kB
// likewise. releaseX and releaseY let the Gets go on; subU and subV get the
// Subscribes' results.
type overtakeScene struct {
	n                  *Notifier
	b                  []blocks.Block
	s, u, v            *Subscription
	releaseX, releaseY func()
	subU, subV         chan error
}

// newOvertakeScene sets the scene up and returns once kA and kX, and, with
// withV, kB and kY, are reserved.
func newOvertakeScene(t *testing.T, withV bool) *overtakeScene {
	t.Helper()
	st := newStallStore()
	n, _ := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("not-overtaken", 4)
	if b[1].Cid().KeyString() < b[0].Cid().KeyString() {
		b[0], b[1] = b[1], b[0]
	}
	kA, kB, kX, kY := b[0].Cid(), b[1].Cid(), b[2].Cid(), b[3].Cid()
	s, u, v := mustSub(t, n, 1), mustSub(t, n, 2), mustSub(t, n, 3)
	require.NoError(t, s.Subscribe(ctx, kA, kB))
	releaseX, releaseY := st.stall(t, kX), st.stall(t, kY)
	subU, subV := make(chan error, 1), make(chan error, 1)
	go func() { subU <- u.Subscribe(ctx, kA, kX) }()
	require.Equal(t, kX, <-st.entered) // kA and kX reserved
	if withV {
		go func() { subV <- v.Subscribe(ctx, kB, kY) }()
		require.Equal(t, kY, <-st.entered) // kB and kY reserved
	}
	return &overtakeScene{n: n, b: b, s: s, u: u, v: v, releaseX: releaseX, releaseY: releaseY, subU: subU, subV: subV}
}

// A waiter does not hold up the operations on a key it has not found busy
// (Notifier.markBusy): s.Unsubscribe(kA, kB) waits for u's stalled Get of
// kA; a Publish of kB, which nothing reserves, goes ahead and delivers kB
// to s, whose want of kB the waiting Unsubscribe has not ended yet. Marking
// every key of the waiter made it wait for the Get of kA, a key it does not
// name (G11).
func TestIO_WaiterHoldsUpOnlyTheKeysItFoundBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st, WithShards(1))
		b := mkBlocks("busy-only", 3)
		kA, kB, kX := b[0].Cid(), b[1].Cid(), b[2].Cid()
		s, u := mustSub(t, n, 1), mustSub(t, n, 2)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		releaseX := st.stall(t, kX)
		subU := make(chan error, 1)
		go func() { subU <- u.Subscribe(ctx, kA, kX) }()
		require.Equal(t, kX, <-st.entered) // kA and kX reserved

		waited := make(chan struct{})
		go func() { defer close(waited); s.Unsubscribe(kA, kB) }()
		synctest.Wait() // asleep on u's reservation of kA
		pub := make(chan error, 1)
		go func() { pub <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[1:2]}) }()
		returnsNow(t, pub, releaseX, "a Publish of kB waited for a stalled Get of kA, behind a waiting Unsubscribe of kA and kB (G11)")
		require.Equal(t, []blocks.Block{b[1]}, recv(t, s).Blocks)
		releaseX()
		require.NoError(t, <-subU)
		done(t, waited, "Unsubscribe")
		require.False(t, s.Wants(kA))
	})
}

// A waiting close marks only the keys it found busy, as the other waiters
// do (Subscription.markIfBusy): Remove(s), asleep on a stalled PutMany of kA,
// holds up neither a Publish of kB, which s wants, nor a Subscribe of kB by
// another subscription (G11). Both waited for the stalled PutMany when a
// close marked every key its subscription wanted.
func TestIO_WaitingCloseHoldsUpOnlyTheKeysItFoundBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st, WithShards(1))
		b := mkBlocks("close-busy-only", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		s, w := mustSub(t, n, 1), mustSub(t, n, 2)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		releaseA, pubA := st.publishStalled(t, n, b[0])
		removed := goAsleep(t, "Remove(s)", func() error { s.Remove(); return nil })

		call := func(f func() error) chan error {
			c := make(chan error, 1)
			go func() { c <- f() }()
			return c
		}
		returnsNow(t, call(func() error { return w.Subscribe(ctx, kB) }), releaseA,
			"a Subscribe of kB waited for a stalled PutMany of kA, behind a waiting Remove of a subscription that wants kA and kB (G11)")
		returnsNow(t, call(func() error { return n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[1:]}) }), releaseA,
			"a Publish of kB waited for a stalled PutMany of kA, behind a waiting Remove of a subscription that wants kA and kB (G11)")
		require.Equal(t, []blocks.Block{b[1]}, recv(t, w).Blocks)
		require.Equal(t, []blocks.Block{b[1]}, recv(t, s).Blocks, "s wanted kB: Remove had not ended it yet")
		require.Equal(t, []cid.Cid{kB}, cancels.take())

		releaseA()
		require.NoError(t, <-pubA)
		require.NoError(t, <-removed)
		require.Equal(t, []cid.Cid{kA}, cancels.take())
		require.NoError(t, s.Err())
		w.Remove()
		requireIndexEmpty(t, n)
	})
}

// A close that waits marks the key it waits for (Notifier.markBusy). When
// the want of a key it found busy ends while it waits (here its block is
// delivered), operations on that key do not wait behind the close's wait for
// other keys (G11), whichever reservation the close sleeps on first. Found by FuzzNotifierModel (seeds
// ce0494023f208536, 8c438d7afed1ec27).
func TestIO_WaitingCloseDropsTheMarkOfAnEndedWant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(1))
		b := mkBlocks("ended-mark", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA, kB))
		releaseA, releaseB := st.stall(t, kA), st.stall(t, kB)
		pubA, pubB := make(chan error, 1), make(chan error, 1)
		go func() { pubA <- n.Publish(ctx, ResponseMessage{Blocks: b[:1]}) }()
		go func() { pubB <- n.Publish(ctx, ResponseMessage{Blocks: b[1:]}) }()
		synctest.Wait() // both in PutMany, kA and kB reserved
		removed := make(chan struct{})
		go func() { defer close(removed); s.Remove() }()
		synctest.Wait()
		require.EqualValues(t, 1, n.waiting.Load(), "Remove waits for a reservation")

		releaseA()
		synctest.Wait()
		require.NoError(t, <-pubA)                  // delivered kA: s wants only kB now
		require.EqualValues(t, 1, n.waiting.Load()) // Remove waits for kB

		again := make(chan error, 1)
		go func() { again <- n.Publish(ctx, ResponseMessage{Blocks: b[:1]}) }()
		synctest.Wait()
		select {
		case err := <-again:
			require.NoError(t, err)
		default:
			releaseB()
			t.Fatal("a Publish of kA, which nobody wants now, waits behind Remove's wait for kB")
		}
		releaseB()
		synctest.Wait()
		<-removed
		require.NoError(t, <-pubB)
		require.NoError(t, n.Close())
	})
}

// Whether a subscription wants a key is read from the key's interest; past
// eight subscribers, from the subscription's map, under its lock (listedIn).
// A reader of one key (inInterest) must let that lock go before it returns:
// Wants, and the scope of a waiting Release (Notifier.needs), whose commit
// takes the lock again. s wants kA; nine others want kZ, whose PutMany
// stalls. s.Release(kA, kZ) waits for nothing (s does not want kZ) and must
// return with s's lock free.
func TestIO_ReadOfAKeyOfManySubscribersLeavesNoLockHeld(t *testing.T) {
	st := newStallStore()
	n, cancels := newWithCancels(t, st)
	b := mkBlocks("many-subscribers", 2)
	kA, kZ := b[0].Cid(), b[1].Cid()
	for i := range 9 {
		require.NoError(t, mustSub(t, n, uint64(10+i)).Subscribe(ctx, kZ))
	}
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, kA))
	requireUnlocked := func(after string) {
		t.Helper()
		if !s.mu.TryLock() {
			s.mu.Unlock() // let go of the leaked lock, so that the cleanup's Close can end s
			t.Fatalf("%s left the subscription's lock held", after)
		}
		s.mu.Unlock()
	}
	require.False(t, s.Wants(kZ))
	requireUnlocked("Wants of a key of nine other subscribers")

	release, published := st.publishStalled(t, n, b[1]) // kZ reserved
	defer release()
	released := make(chan []cid.Cid, 1)
	go func() { released <- s.Release(kA, kZ) }()
	select {
	case got := <-released:
		require.Equal(t, []cid.Cid{kA}, got)
	case <-time.After(hang):
		requireUnlocked("Release, which waits for its commit,")
		t.Fatal("Release(kA, kZ), kZ wanted by nine others and not by s, did not return while kZ's PutMany stalls")
	}
	requireUnlocked("Release")
	require.Equal(t, []cid.Cid{kA}, cancels.take())
	release()
	require.NoError(t, <-published)
}

// A key freed while a waiter waits for another is not held up (G11), for a
// GetBlock nor for an operation that reserves it. Publish P of kA and kB
// (or a Subscribe of both) finds kA reserved by a stalled PutMany (X) and
// kB by another (Y), and sleeps on one of them with that key marked; Y
// returns, and kB is free, P waiting for kA with its one mark there
// (Notifier.markBusy). A GetBlock of kB (a Subscribe of one key that
// nobody else wants, or a Fetch) returns at once with the stored block, and
// so does a Publish of kB. Found by review: when a waiter kept a mark on
// every key it had found busy, both waited for X; letting a GetBlock pass
// the marks (shardIndex.alone) fixed it for the GetBlock only.
func TestIO_KeyFreedWhileAWaiterWaitsIsNotHeldUp(t *testing.T) {
	for _, waiter := range []string{"Publish", "Subscribe"} {
		for _, getBlock := range []string{"Subscribe", "Fetch"} {
			t.Run("waiter="+waiter+"/getBlock="+getBlock, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					st := newStallStore()
					n, cancels := newWithCancels(t, st, WithShards(1))
					b := mkBlocks("pass-marks", 2)
					kB := b[1].Cid()
					releaseX, pubX := st.publishStalled(t, n, b[0])
					releaseY, pubY := st.publishStalled(t, n, b[1])
					var waited chan error
					if waiter == "Publish" {
						waited = goAsleep(t, "Publish of kA and kB", func() error {
							return n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b})
						})
					} else {
						s := mustSub(t, n, 1)
						waited = goAsleep(t, "Subscribe of kA and kB", func() error { return s.Subscribe(ctx, b[0].Cid(), kB) })
					}
					releaseY()
					require.NoError(t, <-pubY) // kB stored, and free
					synctest.Wait()

					w := mustSub(t, n, 9)
					got := make(chan error, 1)
					var blk blocks.Block
					if getBlock == "Subscribe" {
						go func() { got <- w.Subscribe(ctx, kB) }()
					} else {
						go func() {
							var err error
							blk, _, err = n.Fetch(ctx, kB, func() func(ResponseMessage) { return nil })
							got <- err
						}()
					}
					returnsNow(t, got, releaseX, "a GetBlock of kB waited behind a waiter's mark, for a stalled PutMany of kA (G11)")
					if getBlock == "Subscribe" {
						require.Equal(t, []blocks.Block{b[1]}, recv(t, w).Blocks)
					} else {
						require.Equal(t, b[1], blk)
					}
					pub := make(chan error, 1)
					go func() { pub <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[1:]}) }()
					returnsNow(t, pub, releaseX, "a Publish of kB waited behind a waiter, for a stalled PutMany of kA (G11)")
					releaseX()
					require.NoError(t, <-pubX)
					require.NoError(t, <-waited)
					require.Empty(t, cancels.take(), "no want was reported")
				})
			})
		}
	}
}

// The waiter and the GetBlock are Subscribes of one subscription S: W =
// S.Subscribe(kA, kB) waits for kA with kB marked; S.Subscribe(kB) then
// passes W's mark. On a miss S wants kB, which makes W's mark on kB stop
// holding (wakeSubscribes): W goes on once kA is free, adding nothing for
// kB, and a Publish of kB reaches S once (G1, G2). On a hit S gets kB, and
// W, which then finds kB unwanted and stored, hands it over again, as a
// later Subscribe of a stored key does. (Review of the change that lets a
// GetBlock pass the marks.)
func TestIO_GetBlockPassesTheMarkOfItsOwnSubscription(t *testing.T) {
	for _, hit := range []bool{true, false} {
		t.Run(map[bool]string{true: "hit", false: "miss"}[hit], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n, _ := newWithCancels(t, st, WithShards(1))
				b := mkBlocks("pass-own-mark", 3)
				bA, bB, bZ := b[0], b[1], b[2]
				kA, kB := bA.Cid(), bB.Cid()
				releaseX, pubX := st.publishStalled(t, n, bA)
				releaseY := st.stall(t, bZ.Cid())
				if hit {
					releaseY = st.stall(t, kB)
				}
				pubY := make(chan error, 1)
				go func() {
					if hit {
						pubY <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bB}})
					} else {
						pubY <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bZ}, Haves: []cid.Cid{kB}})
					}
				}()
				<-st.entered
				S := mustSub(t, n, 1)
				waited := goAsleep(t, "S.Subscribe(kA, kB)", func() error { return S.Subscribe(ctx, kA, kB) })
				releaseY()
				require.NoError(t, <-pubY)
				synctest.Wait()
				got := make(chan error, 1)
				go func() { got <- S.Subscribe(ctx, kB) }()
				returnsNow(t, got, releaseX, "S.Subscribe(kB) waited behind its own subscription's waiter")
				if hit {
					require.Equal(t, []blocks.Block{bB}, recv(t, S).Blocks)
				}
				synctest.Wait()
				select {
				case err := <-waited:
					t.Fatalf("W returned (%v) before kA was free", err)
				default:
				}
				releaseX()
				require.NoError(t, <-pubX)
				require.NoError(t, <-waited)
				synctest.Wait()
				var gotBlocks []blocks.Block
				for range 2 {
					select {
					case m := <-S.Messages():
						gotBlocks = append(gotBlocks, m.Blocks...)
					default:
					}
				}
				if hit {
					require.ElementsMatch(t, []blocks.Block{bA, bB}, gotBlocks)
				} else {
					require.Equal(t, []blocks.Block{bA}, gotBlocks)
					require.True(t, n.Wanted(kB))
					require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{bB}}))
					synctest.Wait()
					require.Equal(t, []blocks.Block{bB}, recv(t, S).Blocks)
				}
				none(t, S)
				require.False(t, n.Wanted(kB))
			})
		})
	}
}

// A waiter that moves its mark resumes the pending ends parked on it while
// it waits (TestOverflow_PendingEndGoesOnWhenItsClaimantMovesItsMark); if
// the cancel function panics in one of them, the panic goes on to the
// waiter's caller, and the waiter first gives up its wait, its mark
// included (Notifier.resumeWaiting): else its mark would hold its key up
// for good. W, a Publish of kA, kB and kZ (kZ in shard 0, the others in
// shard 1, kA the less), waits for u's Subscribe of kA and kX, whose Get of
// kX stalls, marking kA; kB is reserved by a stalled PutMany. The test holds
// shard 0; u's Get returns, and W, woken, waits for shard 0, still marking
// kA. A HAVE of kC overflows slow, which wants kA: its end finds kA marked
// by W and parks on W. Once shard 0 is free, W moves its mark to kB and
// resumes the end, whose cancel function panics: W's Publish panics, and
// nothing marks kB.
func TestOverflow_PanicInAnEndAMovedMarkResumesLeavesNoMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := newMovedMarkPanicScene(t, "moved-panic", func(sc *movedMarkPanicScene) func() {
			return func() {
				_ = sc.n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{sc.bA, sc.bB, sc.bZ}})
			}
		})
		n, kB := sc.n, sc.bB.Cid()
		sc.unblock0()
		require.Equal(t, "cancel function: kC", <-sc.panicked, "W's Publish")
		require.ErrorIs(t, sc.slow.Err(), ErrSlowConsumer)
		require.Zero(t, marksOn(n, kB), "W, its Publish ended by the panic, still marks kB")

		sc.releaseB()
		require.NoError(t, <-sc.pubB)
		again := make(chan error, 1)
		go func() { again <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{sc.bB}}) }()
		returnsNow(t, again, func() {}, "a Publish of kB waits behind the mark of W, whose Publish panicked")
		sc.u.Remove()
		requireIndexEmpty(t, n)
	})
}

// movedMarkPanicScene is the scene of the tests of a panic in an end that a
// moved mark resumes, set up to the moment before W moves its mark: slow
// wants kA and kC and is at its bound; kB (bB) is reserved by a stalled
// PutMany (releaseB, pubB); W, started by the test, marked kA while u's
// Subscribe of kA and kX reserved it, was woken as u returned and waits for
// shard 0, which the test holds (unblock0); slow's end is pending, parked on
// W. The cancel function panics on kC; W's panic goes to panicked.
type movedMarkPanicScene struct {
	n          *Notifier
	slow, u    *Subscription
	bA, bB, bZ blocks.Block // kA < kB in shard 1, kZ in shard 0
	releaseB   func()
	pubB       chan error
	panicked   chan any
	unblock0   func()
}

// newMovedMarkPanicScene sets the scene up, inside a synctest bubble. w,
// called once slow is at its bound and before kA and kB are reserved,
// returns W's operation (it may subscribe first).
func newMovedMarkPanicScene(t *testing.T, tag string, w func(sc *movedMarkPanicScene) func()) *movedMarkPanicScene {
	t.Helper()
	st := newStallStore()
	var kC cid.Cid // set before any operation
	n := New(st, WithShards(2), WithBufferSize(1), WithMaxPending(1), WithCancelFunc(func(keys []cid.Cid) {
		if slices.Contains(keys, kC) {
			panic("cancel function: kC")
		}
	}))
	b := sortedInShard(n, tag, 1, 2)
	sc := &movedMarkPanicScene{n: n, bA: b[0], bB: b[1], bZ: blockInShard(n, tag+"-Z", 0, true), panicked: make(chan any, 1)}
	kA := sc.bA.Cid()
	kC = blockInShard(n, tag+"-C", 1, true).Cid()
	sc.slow = mustSub(t, n, 10)
	require.NoError(t, sc.slow.Subscribe(ctx, kA, kC))
	fillBacklog(t, n, kC)
	run := w(sc)

	u, releaseX, subU := st.reserveByGet(t, n, 2, kA, blockInShard(n, tag+"-X", 1, true).Cid()) // kA and kX reserved
	sc.u = u
	sc.releaseB, sc.pubB = st.publishStalled(t, n, sc.bB) // kB reserved
	go func() {
		defer func() { sc.panicked <- recover() }()
		run()
	}()
	synctest.Wait() // W waits for u, marking kA
	sc.unblock0 = blockShard(t, n, nil, 0)
	releaseX()
	require.NoError(t, <-subU)
	waitWaiters(t, &n.shards[0].mu, 1) // W, woken, kA still marked
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}))
	require.NoError(t, sc.slow.Err(), "setup: the end is pending, parked on W")
	return sc
}

// A Remove whose close moves its mark resumes the pending ends parked on it
// (Subscription.lockAllOrPark, Notifier.resumeWaiting); if the cancel
// function panics in one of them, the panic reaches Remove's caller, as a
// panic of the cancel function in Remove's own end does, but only once the
// subscription is ended: Remove's panic, like its return, comes once
// Messages() is closed (TestRemove_PanickingCancelFunctionClosesMessagesFirst),
// and Close, whose ends go on past a panic, leaves nothing open
// (TestClose_PanickingCancelFunctionClosesEverything). The scene of
// TestOverflow_PanicInAnEndAMovedMarkResumesLeavesNoMark, with W the close of
// r, a subscription of kA, kB and kZ: it marks kA (u's Get), wakes, waits for
// shard 0, slow's end parks on its mark on kA, and once shard 0 is free the
// close moves its mark to kB (a stalled PutMany) and resumes that end, whose
// cancel function panics.
func TestOverflow_PanicInAnEndAMovedCloseMarkResumesStillEndsTheSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r *Subscription
		sc := newMovedMarkPanicScene(t, "close-moved-panic", func(sc *movedMarkPanicScene) func() {
			r = mustSub(t, sc.n, 11)
			require.NoError(t, r.Subscribe(ctx, sc.bA.Cid(), sc.bB.Cid(), sc.bZ.Cid()))
			return r.Remove
		})
		n, slow, releaseB, pubB, panicked, u := sc.n, sc.slow, sc.releaseB, sc.pubB, sc.panicked, sc.u

		sc.unblock0()
		synctest.Wait() // r's close has moved its mark to kB and resumed slow's end
		require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
		releaseB()
		require.NoError(t, <-pubB)
		require.Equal(t, "cancel function: kC", <-panicked, "r's Remove")
		open := !r.closed.Load()
		if open {
			r.Remove()
		}
		u.Remove()
		requireIndexEmpty(t, n)
		require.False(t, open, "Remove panicked with r still open: a cancel function's panic in another subscription's end, resumed by r's close, left r unended")
		for {
			select {
			case _, ok := <-r.Messages(): // kB's block may be in the buffer
				if ok {
					continue
				}
			default:
				t.Fatal("Messages() of r still open when Remove's panic reached its caller")
			}
			break
		}
	})
}
