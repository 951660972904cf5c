package notifier

import (
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of operations that wait for a blockstore call on their keys: a waiter
// is not overtaken, and holds up only the keys it found busy, through marks
// that stop holding when they go stale. stallStore is in io_test.go.

// A waiter is not overtaken on a key it found busy (Notifier.markBusy). u's
// Subscribe of kA and kX reserves kA for its Get, stalled on kX; v's of kB
// and kY reserves kB likewise. s.Unsubscribe(kA, kB) (or Remove) waits,
// marking both; a later Publish of kA waits too. Once u's Get returns, the
// waiter still waits for kB, and the Publish waits behind its mark on kA:
// taking kA first, it would deliver kA to s, whose Unsubscribe began before
// it.
func TestIO_WaiterIsNotOvertaken(t *testing.T) {
	for _, tc := range markingWaits() {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := newOvertakeScene(t)
				kA, kB := o.b[0].Cid(), o.b[1].Cid()
				waited := make(chan struct{})
				go func() { defer close(waited); tc.wait(o.s, kA, kB) }()
				synctest.Wait() // asleep on u's reservation of kA, kA and kB marked
				later := make(chan error, 1)
				go func() { later <- o.n.Publish(ctx, ResponseMessage{From: "peer", Blocks: o.b[:1]}) }()
				synctest.Wait()

				o.requireLaterWaitsOnceUReturns(t, tc.name, later)
				o.releaseY()
				require.NoError(t, <-o.subV)
				done(t, waited, tc.name)
				require.NoError(t, <-later)
				synctest.Wait()
				o.requireOnlyUGotKA(t, tc.name)
			})
		})
	}
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
// kB (b[0], b[1]); u's Subscribe of kA and kX reserves kA for its Get,
// stalled on kX, and v's of kB and kY reserves kB likewise. releaseX and
// releaseY let the Gets go on; subU and subV get the Subscribes' results.
type overtakeScene struct {
	n                  *Notifier
	b                  []blocks.Block
	s, u, v            *Subscription
	releaseX, releaseY func()
	subU, subV         chan error
}

// newOvertakeScene sets the scene up and returns once kA, kB, kX and kY
// are reserved.
func newOvertakeScene(t *testing.T) *overtakeScene {
	t.Helper()
	st := newStallStore()
	n, _ := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("not-overtaken", 4)
	kA, kB, kX, kY := b[0].Cid(), b[1].Cid(), b[2].Cid(), b[3].Cid()
	s, u, v := mustSub(t, n, 1), mustSub(t, n, 2), mustSub(t, n, 3)
	require.NoError(t, s.Subscribe(ctx, kA, kB))
	releaseX, releaseY := st.stall(t, kX), st.stall(t, kY)
	subU, subV := make(chan error, 1), make(chan error, 1)
	go func() { subU <- u.Subscribe(ctx, kA, kX) }()
	require.Equal(t, kX, <-st.entered) // kA and kX reserved
	go func() { subV <- v.Subscribe(ctx, kB, kY) }()
	require.Equal(t, kY, <-st.entered) // kB and kY reserved
	return &overtakeScene{n: n, b: b, s: s, u: u, v: v, releaseX: releaseX, releaseY: releaseY, subU: subU, subV: subV}
}

// requireLaterWaitsOnceUReturns lets u's Get return, freeing kA, and checks
// that the later Publish of kA still waits, behind the waiter's mark on kA,
// while the waiter waits for kB: two waiting.
func (o *overtakeScene) requireLaterWaitsOnceUReturns(t *testing.T, name string, later chan error) {
	t.Helper()
	o.releaseX()
	require.NoError(t, <-o.subU)
	synctest.Wait()
	select {
	case err := <-later:
		t.Errorf("a later Publish of kA overtook the waiting %s (returned %v)", name, err)
		later <- err
	default:
		require.EqualValues(t, 2, o.n.waiting.Load(), "the %s waits for kB, the Publish behind it", name)
	}
}

// requireOnlyUGotKA checks, once everything has returned, that the Publish
// of kA reached u but not s, whose Unsubscribe or Remove began before it.
func (o *overtakeScene) requireOnlyUGotKA(t *testing.T, name string) {
	t.Helper()
	if name == "Unsubscribe" {
		require.Empty(t, o.s.Messages(), "s unsubscribed kA before the Publish")
	} else if m, ok := <-o.s.Messages(); ok {
		t.Errorf("s, removed before the Publish, got %v", m)
	}
	require.Equal(t, []blocks.Block{o.b[0]}, recv(t, o.u).Blocks)
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

// A close that waits marks the keys its subscription wants (Notifier.mark).
// When one of those wants ends while it waits (here its block is
// delivered), that key's mark holds nobody up any more, so operations on the
// key do not wait behind the close's wait for other keys (G11), whichever
// reservation the close sleeps on. Found by FuzzNotifierModel (seeds
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

// The stale mark of TestIO_WaitingCloseDropsTheMarkOfAnEndedWant does not
// shield a later waiter either: an operation that waits for that key (here
// reserved again by a second Publish) marks it too, so a still later one on
// the key waits behind it instead of overtaking it (Notifier.markBusy,
// op.holds).
func TestIO_WaiterBehindAStaleMarkHoldsUpLaterOnes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newStaleMarkScene(t)
		st, n, b := sm.st, sm.n, sm.b
		releaseA2, pubA2 := st.publishStalled(t, n, b[0])

		older, later := make(chan error, 1), make(chan error, 1)
		go func() { older <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b[0], b[2]}}) }()
		synctest.Wait() // waits for kA and kC, marking both (markBusy)
		releaseA2()
		require.NoError(t, <-pubA2)
		synctest.Wait() // still waits for kC
		go func() { later <- n.Publish(ctx, ResponseMessage{Blocks: b[:1]}) }()
		synctest.Wait()
		select {
		case err := <-later:
			t.Errorf("a later Publish of kA overtook the waiting Publish of kA and kC (returned %v)", err)
		default:
			require.EqualValues(t, 3, n.waiting.Load(), "Remove, the older Publish and the later one wait")
		}
		sm.releaseB()
		sm.releaseC()
		synctest.Wait()
		<-sm.removed
		for _, c := range []chan error{sm.pubB, sm.pubC, older} {
			require.NoError(t, <-c)
		}
		require.NoError(t, n.Close())
	})
}

// staleMarkScene is the scene of TestIO_WaiterBehindAStaleMarkHoldsUpLaterOnes:
// s, wanting kA and kB (b[0], b[1]), is being removed, waiting for the
// stalled Publishes of kB and kC (pubB, pubC, let go by releaseB and
// releaseC), with a stale mark on kA, whose Publish has returned; removed
// is closed when s.Remove returns.
type staleMarkScene struct {
	st                 *stallStore
	n                  *Notifier
	b                  []blocks.Block
	releaseB, releaseC func()
	pubB, pubC         chan error
	removed            chan struct{}
}

// newStaleMarkScene sets the scene up: Remove marks kA and kB, both
// reserved by stalled Publishes, and the Publish of kA then returns, which
// leaves Remove's mark on kA stale.
func newStaleMarkScene(t *testing.T) *staleMarkScene {
	t.Helper()
	st := newStallStore()
	n := New(st, WithShards(1))
	b := mkBlocks("take-over", 3)
	kA, kB, kC := b[0].Cid(), b[1].Cid(), b[2].Cid()
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, kA, kB))
	releaseA, releaseB, releaseC := st.stall(t, kA), st.stall(t, kB), st.stall(t, kC)
	pubA, pubB, pubC := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { pubA <- n.Publish(ctx, ResponseMessage{Blocks: b[:1]}) }()
	go func() { pubB <- n.Publish(ctx, ResponseMessage{Blocks: b[1:2]}) }()
	go func() { pubC <- n.Publish(ctx, ResponseMessage{Blocks: b[2:]}) }()
	synctest.Wait() // kA, kB and kC reserved
	removed := make(chan struct{})
	go func() { defer close(removed); s.Remove() }()
	synctest.Wait() // Remove marks kA and kB
	releaseA()
	synctest.Wait()
	require.NoError(t, <-pubA) // s wants only kB: Remove's mark on kA is stale
	for len(st.entered) > 0 {
		<-st.entered
	}
	return &staleMarkScene{st: st, n: n, b: b, releaseB: releaseB, releaseC: releaseC, pubB: pubB, pubC: pubC, removed: removed}
}

// An operation already asleep on a waiting close's mark when the close's
// want of that key ends wakes then: the mark holds nobody up any more
// (op.holds), so it must not sleep until the close's own wait, here for a
// stalled PutMany of another key, is over (G11). The want ends by an
// operation older than the close, which the close's marks do not stop:
// a delivery, or an Unsubscribe. Found by review.
func TestIO_SleeperOnAStaleMarkWakes(t *testing.T) {
	for _, how := range []string{"delivered", "unsubscribed"} {
		t.Run(how, func(t *testing.T) { sleeperOnAStaleMark(t, how) })
	}
}

func sleeperOnAStaleMark(t *testing.T, how string) {
	synctest.Test(t, func(t *testing.T) {
		sc := newRemoveBehindStall(t, "stale-sleeper", how)
		n, s, bA := sc.n, sc.s, sc.bA
		kA := bA.Cid()

		later := make(chan error, 1)
		go func() { later <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA}}) }()
		spinWaiting(t, n, 2) // asleep on Remove's mark on kA

		sc.unblock0()
		require.NoError(t, <-sc.older)
		if how == "delivered" {
			require.Equal(t, []blocks.Block{bA}, recv(t, s).Blocks)
		}
		require.False(t, s.Wants(kA), "s wants kA no more")
		synctest.Wait()
		select {
		case err := <-later:
			require.NoError(t, err)
		default:
			sc.releaseB()
			assert.NoError(t, <-later)
			t.Fatal("a Publish of kA, which s wants no more, sleeps behind Remove's wait for the stalled PutMany of kB (G11)")
		}
		sc.finish(t)
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

// A GetBlock passes a waiter's marks: a Subscribe of one key that nobody
// else wants, or a Fetch of it, reserves nothing (Notifier.peek), so it does
// not wait behind an older waiter that found its key busy, and so for a
// stalled blockstore call on a key it does not name (G11). Publish P of kA
// and kB (or a Subscribe of both) finds kA reserved by a stalled PutMany
// (X) and kB by another (Y), marks both and sleeps on X; Y returns, and kB
// is free. The GetBlock of kB returns at once, the block if it is stored; a
// Publish of kB, which would reserve it, still waits behind P (the
// first-come order of TestIO_WaiterIsNotOvertaken). Found by review: every
// later operation on kB waited for X.
func TestIO_GetBlockPassesTheMarksOfAWaiter(t *testing.T) {
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
					synctest.Wait()
					select {
					case err := <-pub:
						t.Fatalf("a Publish of kB overtook the waiter that found kB busy (returned %v)", err)
					default:
					}
					releaseX()
					require.NoError(t, <-pubX)
					require.NoError(t, <-waited)
					require.NoError(t, <-pub)
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
