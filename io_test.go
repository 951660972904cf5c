package notifier

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/stacks"
)

// stallStore is a blockstore whose Get and PutMany of chosen keys stop until
// released, and say when they have started.
type stallStore struct {
	Blockstore
	mu      sync.Mutex
	stalled map[cid.Cid]chan struct{} // key -> release
	entered chan cid.Cid
}

func newStallStore() *stallStore {
	return &stallStore{Blockstore: memStore(), stalled: map[cid.Cid]chan struct{}{}, entered: make(chan cid.Cid, 16)}
}

// stall makes the next blockstore calls on k wait until the returned func is
// called.
func (s *stallStore) stall(t *testing.T, k cid.Cid) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.stalled[k] = ch
	s.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return release
}

// publishStalled publishes b with its PutMany stalled, and returns once that
// PutMany has begun, b's key reserved: release lets it go on, and published
// gets the Publish's result.
func (s *stallStore) publishStalled(t *testing.T, n *Notifier, b blocks.Block) (release func(), published chan error) {
	t.Helper()
	release = s.stall(t, b.Cid())
	published = make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
	require.Equal(t, b.Cid(), <-s.entered)
	return release, published
}

// goAsleep runs f on its own goroutine, in a synctest bubble, and checks,
// once the bubble has settled, that f waits: the setup of the tests whose
// subject is a waiter. what names f. The channel gets f's result.
func goAsleep(t *testing.T, what string, f func() error) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("setup: %s did not wait for the older waiters (returned %v)", what, err)
	default:
	}
	return done
}

// returnsNow checks, in a synctest bubble, that the call behind done has
// returned nil without waiting for the stalled blockstore call that release
// lets go: else it releases it, waits for the call, and fails with why.
func returnsNow(t *testing.T, done chan error, release func(), why string) {
	t.Helper()
	synctest.Wait()
	select {
	case err := <-done:
		require.NoError(t, err)
	default:
		release()
		require.NoError(t, <-done)
		t.Error(why)
	}
}

// reserveByGet makes k busy, reserved by a Subscribe of k and y by a new
// subscription u whose Get of y stalls, and returns once that Get has begun:
// release lets it go on, and subscribed gets the Subscribe's result. u then
// wants k, unless the blockstore has k, and y, likewise. A waiter marks only
// the keys it finds busy (Notifier.markBusy): the tests that need a waiter's
// mark on a key make the key busy this way, which changes nobody else's
// wants.
func (s *stallStore) reserveByGet(t *testing.T, n *Notifier, id uint64, k, y cid.Cid) (u *Subscription, release func(), subscribed chan error) {
	t.Helper()
	u = mustSub(t, n, id)
	release = s.stall(t, y)
	subscribed = make(chan error, 1)
	go func() { subscribed <- u.Subscribe(ctx, k, y) }()
	require.Equal(t, y, <-s.entered)
	return u, release, subscribed
}

// twoMarkingWaiters are two operations of one subscription s that wait with
// a key A marked: O on (A, Z), for a stalled PutMany of Z, and X on (B, A),
// younger, for a stalled PutMany of B. Both are Subscribes (waitMarking) or
// both Unsubscribes (waitMarkingUnsubscribes); older and waiting get O's and
// X's results.
type twoMarkingWaiters struct {
	t                  *testing.T
	s                  *Subscription
	kA                 cid.Cid
	unsubscribe        bool
	releaseZ, releaseB func()
	pubZ, pubB         chan error
	older, waiting     chan error
}

// waitMarking starts O = s.Subscribe(A, Z) and X = s.Subscribe(B, A), the
// keys of bZ and bB stalled in Publishes, and returns once both wait with kA
// marked. tag names the blocks.
func (st *stallStore) waitMarking(t *testing.T, n *Notifier, s *Subscription, kA cid.Cid, bZ, bB blocks.Block, tag string) *twoMarkingWaiters {
	t.Helper()
	w := &twoMarkingWaiters{t: t, s: s, kA: kA}
	st.startMarking(n, w, bZ, bB, tag, func(ks ...cid.Cid) error { return s.Subscribe(ctx, ks...) })
	return w
}

// waitMarkingUnsubscribes is waitMarking with O = s.Unsubscribe(A, Z) and X
// = s.Unsubscribe(B, A); s must want A, Z and B.
func (st *stallStore) waitMarkingUnsubscribes(t *testing.T, n *Notifier, s *Subscription, kA cid.Cid, bZ, bB blocks.Block, tag string) *twoMarkingWaiters {
	t.Helper()
	w := &twoMarkingWaiters{t: t, s: s, kA: kA, unsubscribe: true}
	st.startMarking(n, w, bZ, bB, tag, func(ks ...cid.Cid) error { s.Unsubscribe(ks...); return nil })
	return w
}

// startMarking runs O = run(A, Z) and X = run(B, A) for w. kA is made busy
// by a third subscription's Subscribe while they start, so that both mark
// it (Notifier.markBusy).
func (st *stallStore) startMarking(n *Notifier, w *twoMarkingWaiters, bZ, bB blocks.Block, tag string, run func(ks ...cid.Cid) error) {
	t := w.t
	t.Helper()
	w.older, w.waiting = make(chan error, 1), make(chan error, 1)
	w.releaseZ, w.pubZ = st.publishStalled(t, n, bZ) // Z reserved, stalled
	w.releaseB, w.pubB = st.publishStalled(t, n, bB) // B reserved, stalled
	_, releaseY, subY := st.reserveByGet(t, n, 3, w.kA, mkBlocks(tag+"-y", 1)[0].Cid())
	go func() { w.older <- run(w.kA, bZ.Cid()) }() // O: waits for Z, A marked
	synctest.Wait()
	go func() { w.waiting <- run(bB.Cid(), w.kA) }() // X: waits for B, A marked
	synctest.Wait()
	releaseY() // A free, marked by O and X
	require.NoError(t, <-subY)
	synctest.Wait()
}

// releaseOlder lets Z's PutMany go on, then O, which records s's want of A
// (or ends it): X's mark on A stops holding.
func (w *twoMarkingWaiters) releaseOlder() {
	w.t.Helper()
	w.releaseZ()
	require.NoError(w.t, <-w.pubZ)
	require.NoError(w.t, <-w.older)
	synctest.Wait()
	require.Equal(w.t, !w.unsubscribe, w.s.Wants(w.kA))
}

// releaseYounger lets B's PutMany go on, then X.
func (w *twoMarkingWaiters) releaseYounger() {
	w.t.Helper()
	w.releaseB()
	require.NoError(w.t, <-w.pubB)
	require.NoError(w.t, <-w.waiting)
}

func (s *stallStore) wait(k cid.Cid) {
	s.mu.Lock()
	ch := s.stalled[k]
	s.mu.Unlock()
	if ch != nil {
		s.entered <- k
		<-ch
	}
}

func (s *stallStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	s.wait(c)
	return s.Blockstore.Get(ctx, c)
}

func (s *stallStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, b := range blks {
		s.wait(b.Cid())
	}
	return s.Blockstore.PutMany(ctx, blks)
}

// G11: a PutMany and a Get that do not return hold no lock of the Notifier.
// With one shard, every key shares it: while both are stalled, Subscribe,
// Publish (storing and delivering), Unsubscribe and Remove of other keys
// complete. Once released, the stalled operations deliver what G1-G3 say.
func TestIO_StalledStoreDelaysOnlyItsKeys(t *testing.T) {
	st := newStallStore()
	n, cancels := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("stall", 6)
	kPut, kGet := b[0].Cid(), b[1].Cid()
	require.NoError(t, st.Blockstore.PutMany(ctx, b[1:2])) // kGet is stored: its Subscribe will find it

	waiter := mustSub(t, n, 1)
	require.NoError(t, waiter.Subscribe(ctx, kPut))
	releasePut, releaseGet := st.stall(t, kPut), st.stall(t, kGet)

	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[:1]}) }()
	require.Equal(t, kPut, <-st.entered)
	getter := mustSub(t, n, 2)
	subscribed := make(chan error, 1)
	go func() { subscribed <- getter.Subscribe(ctx, kGet) }()
	require.Equal(t, kGet, <-st.entered)

	// Both stalled; every operation on other keys goes through.
	other := mustSub(t, n, 3)
	require.NoError(t, other.Subscribe(ctx, b[2].Cid(), b[3].Cid(), b[4].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[2:3], Haves: []cid.Cid{b[3].Cid()}}))
	require.Equal(t, ResponseMessage{From: "peer", Blocks: b[2:3], Haves: []cid.Cid{b[3].Cid()}}, recv(t, other))
	other.Unsubscribe(b[3].Cid())
	has, err := st.Has(ctx, b[2].Cid())
	require.NoError(t, err)
	require.True(t, has, "G3")
	gone := mustSub(t, n, 4)
	require.NoError(t, gone.Subscribe(ctx, b[5].Cid()))
	gone.Remove()
	require.Empty(t, waitClosed(t, gone))
	require.Equal(t, sorted(b[2].Cid(), b[3].Cid(), b[5].Cid()), cancels.take())
	select {
	case err := <-published:
		t.Fatalf("the stalled Publish returned %v", err)
	case err := <-subscribed:
		t.Fatalf("the stalled Subscribe returned %v", err)
	default:
	}
	none(t, waiter)

	releasePut()
	require.NoError(t, <-published)
	require.Equal(t, ResponseMessage{From: "peer", Blocks: b[:1]}, recv(t, waiter), "G1: delivered once stored")
	releaseGet()
	require.NoError(t, <-subscribed)
	require.Equal(t, ResponseMessage{Blocks: b[1:2]}, recv(t, getter), "G1: a stored block found by the check")
	require.Equal(t, sorted(kPut), cancels.take())
	other.Remove()
	require.Equal(t, sorted(b[4].Cid()), cancels.take())
	waiter.Remove()
	getter.Remove()
	require.Equal(t, Stats{}, n.Stats(), "G8")
}

// G1/G2 with I/O outside the locks: operations on a key whose blockstore call
// is stalled wait for it, and see it done. A Subscribe of a key being stored
// gets the block once, from the Publish; a second Publish of it waits and
// delivers nothing more; Unsubscribe and Remove of a subscription wanting it
// wait too, so none of them sees the key half stored.
func TestIO_OperationsOnAStalledKeyWait(t *testing.T) {
	st := newStallStore()
	n, cancels := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("wait", 1)[0]
	k := b.Cid()
	early, leaver := mustSub(t, n, 1), mustSub(t, n, 3)
	require.NoError(t, early.Subscribe(ctx, k))
	require.NoError(t, leaver.Subscribe(ctx, k))
	release := st.stall(t, k)
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}) }()
	require.Equal(t, k, <-st.entered)

	late := mustSub(t, n, 2)
	results := make(chan string, 4)
	go func() {
		require.NoError(t, late.Subscribe(ctx, k))
		results <- "subscribe"
	}()
	go func() {
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "other", Blocks: []blocks.Block{b}}))
		results <- "publish again"
	}()
	go func() {
		early.Unsubscribe(k)
		results <- "unsubscribe"
	}()
	go func() {
		leaver.Remove()
		results <- "remove"
	}()
	waitWaiting(t, n, 4)
	require.Empty(t, results, "operations on the stalled key must wait")
	// The read calls do not wait: they answer from the wants as they were
	// before the stalled Publish (doc.go).
	require.True(t, n.Wanted(k))
	require.True(t, early.Wants(k))
	require.False(t, n.Interested(k))

	release()
	require.NoError(t, <-published)
	for range 4 {
		<-results
	}
	require.Equal(t, []ResponseMessage{{From: "peer", Blocks: []blocks.Block{b}}}, waitClosed(t, leaver),
		"Remove waited for the Publish, which found leaver wanting the block")
	require.Equal(t, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}, recv(t, early))
	none(t, early)
	// late subscribed after the Publish took effect: the check found the block.
	require.Equal(t, []blocks.Block{b}, recv(t, late).Blocks)
	none(t, late)
	require.Equal(t, sorted(k), cancels.take(), "one CANCEL, for the delivery to early and leaver")
	require.Equal(t, Stats{Subscriptions: 2}, n.Stats())
}

// waitWaiting waits until want operations of n wait for a reservation.
func waitWaiting(t *testing.T, n *Notifier, want int64) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for n.waiting.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations wait for a reservation, want %d", n.waiting.Load(), want)
		}
		runtime.Gosched()
	}
}

// panicStore panics in Get and PutMany of one key.
type panicStore struct {
	Blockstore
	key cid.Cid
}

func (p *panicStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if c == p.key {
		panic("blockstore: Get " + c.String())
	}
	return p.Blockstore.Get(ctx, c)
}

func (p *panicStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, b := range blks {
		if b.Cid() == p.key {
			panic("blockstore: PutMany " + b.Cid().String())
		}
	}
	return p.Blockstore.PutMany(ctx, blks)
}

// A blockstore call that panics leaves no reservation behind: the panic goes
// on to the caller, and later operations on the key, and Close, do not wait
// for ever.
func TestIO_PanickingStoreLeavesNoReservation(t *testing.T) {
	b := mkBlocks("panic", 1)[0]
	k := b.Cid()
	ps := &panicStore{Blockstore: memStore(), key: k}
	n := New(ps, WithShards(1))
	s := mustSub(t, n, 1)
	require.PanicsWithValue(t, "blockstore: Get "+k.String(), func() { _ = s.Subscribe(ctx, k) })
	require.False(t, n.isReserved(k))
	require.PanicsWithValue(t, "blockstore: PutMany "+k.String(), func() {
		_ = n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}})
	})
	require.False(t, n.isReserved(k))
	ps.key = cid.Undef // the store works again
	require.NoError(t, s.Subscribe(ctx, k), "the key is free")
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
	require.Equal(t, []blocks.Block{b}, recv(t, s).Blocks)
	closed := make(chan struct{})
	go func() { defer close(closed); require.NoError(t, n.Close()) }()
	done(t, closed, "Close after a panicking blockstore")
}

// A waiter is not overtaken on a key it found busy (Notifier.markBusy). u's
// Subscribe of kA and kX reserves kA for its Get, stalled on kX; v's of kB
// and kY reserves kB likewise. s.Unsubscribe(kA, kB) (or Remove) waits,
// marking both; a later Publish of kA waits too. Once u's Get returns, the
// waiter still waits for kB, and the Publish waits behind its mark on kA:
// taking kA first, it would deliver kA to s, whose Unsubscribe began before
// it.
func TestIO_WaiterIsNotOvertaken(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait func(s *Subscription, keys ...cid.Cid)
	}{
		{"Remove", func(s *Subscription, _ ...cid.Cid) { s.Remove() }},
		{"Unsubscribe", func(s *Subscription, keys ...cid.Cid) { s.Unsubscribe(keys...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
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

				waited := make(chan struct{})
				go func() { defer close(waited); tc.wait(s, kA, kB) }()
				synctest.Wait() // asleep on u's reservation of kA, kA and kB marked
				later := make(chan error, 1)
				go func() { later <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[:1]}) }()
				synctest.Wait()

				releaseX()
				require.NoError(t, <-subU)
				synctest.Wait()
				select {
				case err := <-later:
					t.Errorf("a later Publish of kA overtook the waiting %s (returned %v)", tc.name, err)
					later <- err
				default:
					require.EqualValues(t, 2, n.waiting.Load(), "the %s waits for kB, the Publish behind it", tc.name)
				}
				releaseY()
				require.NoError(t, <-subV)
				done(t, waited, tc.name)
				require.NoError(t, <-later)
				synctest.Wait()
				if tc.name == "Unsubscribe" {
					require.Empty(t, s.Messages(), "s unsubscribed kA before the Publish")
				} else if m, ok := <-s.Messages(); ok {
					t.Errorf("s, removed before the Publish, got %v", m)
				}
				require.Equal(t, []blocks.Block{b[0]}, recv(t, u).Blocks)
			})
		})
	}
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
		releaseB()
		releaseC()
		synctest.Wait()
		<-removed
		for _, c := range []chan error{pubB, pubC, older} {
			require.NoError(t, <-c)
		}
		require.NoError(t, n.Close())
	})
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

// A close asleep behind another operation's mark on a key wakes and goes on
// when its own subscription's want of that key ends while it sleeps: it has
// nothing left to wait for. s2 wants kA alone; a Publish of HAVEs of kA and
// kB waits for kB's stalled PutMany with both marked, and Remove(s2) sleeps
// on its mark on kA. An operation older than both ends s2's want of kA (a
// delivery, or an Unsubscribe). Remove(s2) slept on until the PutMany of kB,
// a key s2 never wanted, returned (G11). Found by review.
func TestIO_CloseWakesWhenItsOwnWantEnds(t *testing.T) {
	for _, how := range []string{"delivered", "unsubscribed"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n := New(st, WithShards(2))
				bA := blockInShard(n, "own-want-A", 1, true)
				bB := blockInShard(n, "own-want-B", 1, true)
				bX := blockInShard(n, "own-want-X", 0, true)
				kA, kB := bA.Cid(), bB.Cid()
				s2 := mustSub(t, n, 2)
				require.NoError(t, s2.Subscribe(ctx, kA))
				releaseB, pubB := st.publishStalled(t, n, bB) // kB reserved, its PutMany stalled
				// kA busy too, so that the Publish below marks it (Notifier.markBusy).
				u, releaseY, subY := st.reserveByGet(t, n, 3, kA, blockInShard(n, "own-want-Y", 1, true).Cid())

				unblock0 := blockShard(t, n, nil, 0)
				older := make(chan error, 1)
				if how == "delivered" {
					go func() { older <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA, bX}}) }()
					waitBlockedOnMutex(t, "notifier.(*Notifier).Publish")
				} else {
					go func() { s2.Unsubscribe(kA, bX.Cid()); older <- nil }()
					waitBlockedOnMutex(t, "notifier.(*Subscription).Unsubscribe")
				}
				haves := havesMarkingKA(t, n, kA, kB, releaseY, subY)
				removed := make(chan struct{})
				go func() { defer close(removed); s2.Remove() }()
				spinWaiting(t, n, 2) // asleep on the Publish's mark on kA

				unblock0()
				require.NoError(t, <-older)
				require.False(t, s2.Wants(kA), "s2 wants nothing now")
				synctest.Wait()
				select {
				case <-removed:
				default:
					releaseB()
					<-removed
					t.Fatal("Remove(s2), whose subscription wants nothing now, sleeps until the stalled PutMany of kB returns (G11)")
				}
				releaseB()
				require.NoError(t, <-pubB)
				require.NoError(t, <-haves)
				u.Remove()
				requireIndexEmpty(t, n)
				require.NoError(t, n.Close())
			})
		})
	}
}

// havesMarkingKA starts a Publish of HAVEs of kA and kB, in a synctest
// bubble, and returns once that Publish waits for kB's reservation with kA
// marked; its result goes to the channel returned. kB must be reserved by a
// stalled call, and kA by the Subscribe that reserveByGet started, whose Get
// releaseY lets go on (subY gets its result): the Publish finds both busy
// and marks both (Notifier.markBusy), sleeps on kA's, wakes as the Subscribe
// goes on, and sleeps again on kB's, keeping its mark on kA.
func havesMarkingKA(t *testing.T, n *Notifier, kA, kB cid.Cid, releaseY func(), subY chan error) chan error {
	t.Helper()
	haves := make(chan error, 1)
	go func() { haves <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kA, kB}}) }()
	spinWaiting(t, n, 1)
	slept := n.waits.Load()
	releaseY()
	require.NoError(t, <-subY)
	for n.waits.Load() < slept+1 || n.waiting.Load() != 1 {
		runtime.Gosched()
	}
	return haves
}

// Deliveries of a key to other subscriptions wake neither a close whose mark
// on the key went dormant earlier nor what sleeps behind that close. s2
// wants kA, kB and kC; Remove(s2) sleeps on kB's stalled PutMany; an older
// Unsubscribe ends s2's want of kA (the one wake-up due); a Publish of HAVEs
// of kC sleeps on Remove's mark on kC. Then kA is delivered 20 times to s3:
// nothing changes for the sleepers. Each delivery woke both, to sleep
// again: the close because its dormant mark on kA did not hold, and the
// Publish with it. Found by review.
func TestIO_DeliveryToOthersWakesNoDormantClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		del := st.Blockstore.(interface {
			DeleteBlock(context.Context, cid.Cid) error
		})
		n := New(st, WithShards(2))
		bA := blockInShard(n, "dormant-A", 1, true)
		bB := blockInShard(n, "dormant-B", 1, true)
		bC := blockInShard(n, "dormant-C", 1, true)
		bX := blockInShard(n, "dormant-X", 0, true)
		kA, kB, kC := bA.Cid(), bB.Cid(), bC.Cid()
		s2 := mustSub(t, n, 2)
		require.NoError(t, s2.Subscribe(ctx, kA, kB, kC))
		// kA and kC busy, so that Remove marks them (Subscription.markIfBusy):
		// reserved by a Subscribe of u whose Get of kY stalls.
		u := mustSub(t, n, 4)
		kY := blockInShard(n, "dormant-Y", 1, true).Cid()
		releaseY := st.stall(t, kY)
		subU := make(chan error, 1)
		go func() { subU <- u.Subscribe(ctx, kA, kC, kY) }()
		require.Equal(t, kY, <-st.entered)

		unblock0 := blockShard(t, n, nil, 0)
		older := make(chan struct{})
		go func() { defer close(older); s2.Unsubscribe(kA, bX.Cid()) }()
		waitBlockedOnMutex(t, "notifier.(*Subscription).Unsubscribe")
		removed := make(chan struct{})
		go func() { defer close(removed); s2.Remove() }()
		spinWaiting(t, n, 1)                          // asleep on u's reservations, kA and kC marked
		releaseB, pubB := st.publishStalled(t, n, bB) // kB reserved, its PutMany stalled
		slept := n.waits.Load()
		releaseY()
		require.NoError(t, <-subU)
		for n.waits.Load() < slept+1 || n.waiting.Load() != 1 {
			runtime.Gosched()
		} // asleep on kB's reservation, kA, kB and kC marked
		unblock0()
		<-older // Remove's mark on kA is dormant
		synctest.Wait()
		haves := make(chan error, 1)
		go func() { haves <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}) }()
		spinWaiting(t, n, 2) // asleep on Remove's mark on kC
		synctest.Wait()

		s3 := mustSub(t, n, 3)
		const deliveries = 20
		before := n.waits.Load()
		for range deliveries {
			require.NoError(t, s3.Subscribe(ctx, kA))
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{bA}}))
			require.Equal(t, []blocks.Block{bA}, recv(t, s3).Blocks)
			require.NoError(t, del.DeleteBlock(ctx, kA))
			synctest.Wait()
		}
		woke := n.waits.Load() - before
		releaseB()
		require.NoError(t, <-pubB)
		<-removed
		require.NoError(t, <-haves)
		s3.Remove()
		u.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
		require.Zero(t, woke, "the sleepers woke %d times for %d deliveries of kA to s3, which changed nothing for them", woke, deliveries)
	})
}

// removeBehindStall is the scene of the stale-mark tests, inside a synctest
// bubble: on two shards, s wants kA and kB (shard 1); an operation that
// started before the close and will end s's want of kA waits for shard 0,
// which the scene holds (how: "delivered", a Publish of kA and kX, or
// "unsubscribed", an Unsubscribe of them); and s.Remove() waits for kB, with
// kA and kB marked. A close marks only the keys it finds busy
// (Subscription.markIfBusy), so kA is first reserved by a Subscribe of kA
// and kY by another subscription, u, whose Get of kY stalls: Remove sleeps
// on it with kA marked. Then a Publish of kB reserves kB and stalls in its
// PutMany, and u's Get goes on: Remove wakes, finds kB busy, marks it and
// sleeps on it, keeping its mark on kA. u wants kA from then on.
type removeBehindStall struct {
	n          *Notifier
	s          *Subscription
	bA, bB, bX blocks.Block
	releaseB   func()     // lets the stalled PutMany of kB go on
	pubB       chan error // that Publish's result
	unblock0   func()     // lets the older operation go on
	older      chan error // its result
	removed    chan struct{}
}

func newRemoveBehindStall(t *testing.T, prefix, how string) *removeBehindStall {
	t.Helper()
	st := newStallStore()
	n := New(st, WithShards(2))
	sc := &removeBehindStall{
		n:       n,
		bA:      blockInShard(n, prefix+"-A", 1, true),
		bB:      blockInShard(n, prefix+"-B", 1, true),
		bX:      blockInShard(n, prefix+"-X", 0, true),
		older:   make(chan error, 1),
		removed: make(chan struct{}),
	}
	kA, kB := sc.bA.Cid(), sc.bB.Cid()
	s := mustSub(t, n, 1)
	sc.s = s
	require.NoError(t, s.Subscribe(ctx, kA, kB))
	_, releaseY, subY := st.reserveByGet(t, n, 2, kA, blockInShard(n, prefix+"-Y", 1, true).Cid())

	sc.unblock0 = blockShard(t, n, nil, 0)
	switch how {
	case "delivered":
		go func() { sc.older <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{sc.bA, sc.bX}}) }()
		waitBlockedOnMutex(t, "notifier.(*Notifier).Publish")
	case "unsubscribed":
		go func() { s.Unsubscribe(kA, sc.bX.Cid()); sc.older <- nil }()
		waitBlockedOnMutex(t, "notifier.(*Subscription).Unsubscribe")
	default:
		t.Fatalf("removeBehindStall: unknown older operation %q", how)
	}

	go func() { defer close(sc.removed); s.Remove() }()
	spinWaiting(t, n, 1) // Remove waits for u's reservation of kA, kA marked

	sc.releaseB, sc.pubB = st.publishStalled(t, n, sc.bB) // kB reserved, its PutMany stalled
	slept := n.waits.Load()
	releaseY()
	require.NoError(t, <-subY)
	for n.waits.Load() < slept+1 || n.waiting.Load() != 1 {
		runtime.Gosched()
	}
	return sc // Remove waits for kB, kA and kB marked
}

// finish releases the stalled PutMany and checks that everything ends.
func (sc *removeBehindStall) finish(t *testing.T) {
	t.Helper()
	sc.releaseB()
	require.NoError(t, <-sc.pubB)
	<-sc.removed
}

// An operation that started before a waiter, but marks a key they share
// after the waiter did, leaves the waiter's mark in place when it goes on:
// a Publish that starts after the waiter still waits behind it (fairness,
// Notifier.mark). Found by review: a key kept one mark, which the older
// operation replaced and its unmark then deleted, so the later Publish took
// the key while the waiter still waited.
func TestIO_OlderMarkKeepsAYoungerWaitersMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(2))
		bA := blockInShard(n, "older-mark-A", 1, true)
		bJ := blockInShard(n, "older-mark-J", 1, true)
		bM := blockInShard(n, "older-mark-M", 1, true)
		bX := blockInShard(n, "older-mark-X", 0, true)
		kJ, kM := bJ.Cid(), bM.Cid()

		releaseJ, releaseM := st.stall(t, kJ), st.stall(t, kM)
		pubJ, pubM := make(chan error, 1), make(chan error, 1)
		go func() { pubJ <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bJ}}) }()
		require.Equal(t, kJ, <-st.entered) // kJ reserved, its PutMany stalled
		go func() { pubM <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bM}}) }()
		require.Equal(t, kM, <-st.entered) // kM likewise
		// kA busy too, so that both mark it (Notifier.markBusy).
		u, releaseY, subY := st.reserveByGet(t, n, 1, bA.Cid(), blockInShard(n, "older-mark-Y", 1, true).Cid())

		// The older operation takes its id, then waits for shard 0.
		unblock0 := blockShard(t, n, nil, 0)
		older := make(chan error, 1)
		go func() { older <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bX, bA, bM}}) }()
		waitBlockedOnMutex(t, "notifier.(*Notifier).Publish")

		// The waiter waits for kJ, marking kA and kJ.
		waiter := make(chan error, 1)
		go func() { waiter <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA, bJ}}) }()
		spinWaiting(t, n, 1)

		// The older operation waits for kA and kM, marking both; once they
		// are released it goes on, unmarks kA and returns.
		unblock0()
		spinWaiting(t, n, 2)
		releaseY()
		require.NoError(t, <-subY)
		synctest.Wait()
		releaseM()
		require.NoError(t, <-pubM)
		require.NoError(t, <-older)
		synctest.Wait()
		require.EqualValues(t, 1, n.waiting.Load(), "the waiter still waits for kJ")

		later := make(chan error, 1)
		go func() { later <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA}}) }()
		synctest.Wait()
		select {
		case err := <-later:
			t.Errorf("a Publish of kA that started after the waiter overtook it (returned %v)", err)
			later <- err
		default:
			require.EqualValues(t, 2, n.waiting.Load(), "the later Publish waits behind the waiter")
		}
		releaseJ()
		require.NoError(t, <-pubJ)
		require.NoError(t, <-waiter)
		require.NoError(t, <-later)
		u.Remove()
		require.NoError(t, n.Close())
	})
}

// A key marked by two waiters holds up an operation that started between
// them: it waits for the older one, whichever marked the key first
// (shardIndex.markAhead looks only at the marks of operations that started
// before the caller).
func TestIO_WaiterWaitsForTheOldestMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(4))
		bA := blockInShard(n, "oldest-mark-A", 2, true)
		bJ := blockInShard(n, "oldest-mark-J", 2, true)
		bM := blockInShard(n, "oldest-mark-M", 2, true)
		bX := blockInShard(n, "oldest-mark-X", 0, true)
		kA, kJ, kM := bA.Cid(), bJ.Cid(), bM.Cid()
		kY := blockInShard(n, "oldest-mark-Y", 1, true).Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kY, kA)) // the Unsubscribe below needs keys s wants

		releaseJ, releaseM := st.stall(t, kJ), st.stall(t, kM)
		pubJ, pubM := make(chan error, 1), make(chan error, 1)
		go func() { pubJ <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bJ}}) }()
		require.Equal(t, kJ, <-st.entered) // kJ reserved, its PutMany stalled
		go func() { pubM <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bM}}) }()
		require.Equal(t, kM, <-st.entered) // kM likewise
		// kA busy too, so that the oldest and the youngest mark it
		// (Notifier.markBusy).
		_, releaseZ, subZ := st.reserveByGet(t, n, 2, kA, blockInShard(n, "oldest-mark-Z", 2, true).Cid())

		// Ids in this order: oldest, middle, youngest. The first two wait
		// for shards 0 and 1, holding no lock.
		unblock0, unblock1 := blockShard(t, n, nil, 0), blockShard(t, n, nil, 1)
		oldest := make(chan error, 1)
		go func() { oldest <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bX, bA, bM}}) }()
		waitBlockedOnMutex(t, "notifier.(*Notifier).Publish")
		middle := make(chan struct{})
		go func() { defer close(middle); s.Unsubscribe(kY, kA) }()
		waitBlockedOnMutex(t, "notifier.(*Subscription).Unsubscribe")

		// The youngest marks kA first (it waits for kA and kJ), the oldest
		// second (it waits for kA and kM).
		youngest := make(chan error, 1)
		go func() { youngest <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bA, bJ}}) }()
		spinWaiting(t, n, 1)
		unblock0()
		spinWaiting(t, n, 2)
		slept := n.waits.Load()
		releaseZ() // kA free, marked by both, which sleep again
		require.NoError(t, <-subZ)
		for n.waits.Load() < slept+2 || n.waiting.Load() != 2 {
			runtime.Gosched()
		}

		unblock1()
		synctest.Wait()
		select {
		case <-middle:
			t.Error("an Unsubscribe of kA went ahead of a waiting operation on kA that started before it")
		default:
			require.EqualValues(t, 3, n.waiting.Load(), "the Unsubscribe waits for the oldest")
		}
		releaseM()
		releaseJ()
		require.NoError(t, <-pubM)
		require.NoError(t, <-pubJ)
		require.NoError(t, <-oldest)
		require.NoError(t, <-youngest)
		<-middle
		require.NoError(t, n.Close())
	})
}

// A close's mark that stopped holding when its subscription's want ended
// holds again when the subscription wants the key again while the close
// still waits: a Publish of the key that starts after the close waits behind
// it, instead of taking the key and making the close, once woken, sleep
// behind that Publish's stalled PutMany. Found by review: the first version
// of wakeStaleMarks deleted the mark.
func TestIO_StaleMarkHoldsAgainWhenTheWantReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := newRemoveBehindStall(t, "mark-returns", "unsubscribed")
		n, s, bA := sc.n, sc.s, sc.bA
		kA := bA.Cid()
		sc.unblock0()
		require.NoError(t, <-sc.older)           // the want of kA ended: Remove's mark on it is dormant
		require.NoError(t, s.Subscribe(ctx, kA)) // and holds again
		require.True(t, n.Wanted(kA))

		later := make(chan error, 1)
		go func() { later <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{bA}}) }()
		synctest.Wait()
		select {
		case err := <-later:
			t.Errorf("a Publish of kA that started after the waiting Remove went ahead of it (returned %v)", err)
			later <- err
		default:
			require.EqualValues(t, 2, n.waiting.Load(), "the Publish waits behind the Remove")
		}
		sc.finish(t)
		require.NoError(t, <-later)
		require.NoError(t, n.Close())
	})
}

// wakeOnRelease is called by waiters holding different shard locks while
// wakeStaleMarks, holding another, swaps the channel out (wakeWaiters): it
// must return a channel, never read a nil one. A stress test of the two
// primitives, bounded in time; found by review, where the second read after
// a lost CompareAndSwap found nil.
func TestWakeOnRelease_RacesWakeWaiters(t *testing.T) {
	// More Ps than this machine's two CPUs: the window between a lost
	// CompareAndSwap and the next read is a few instructions, which the
	// swapper hits when the OS preempts a waiter there.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(8, runtime.NumCPU())))
	const waiters, budget = 6, 2 * time.Second
	o := &op{}
	var wg sync.WaitGroup
	done := make(chan struct{})
	panics := make(chan any, waiters)
	for range waiters {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					panics <- r
				}
			}()
			for {
				select {
				case <-done:
					return
				default:
				}
				for range 1024 {
					if o.wakeOnRelease() == nil {
						panic("wakeOnRelease returned a nil channel")
					}
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				o.wakeWaiters()
			}
		}
	})
	select {
	case r := <-panics:
		t.Errorf("wakeOnRelease racing wakeWaiters: %v", r)
	case <-time.After(budget):
	}
	close(done)
	wg.Wait()
}

// spinWaiting is waitWaiting inside a synctest bubble, whose clock stands
// still while the caller spins: it gives up after a bounded number of
// yields instead of at a deadline.
func spinWaiting(t *testing.T, n *Notifier, want int64) {
	t.Helper()
	for i := 0; n.waiting.Load() != want; i++ {
		if i > 10_000_000 {
			t.Fatalf("%d operations wait for a reservation, want %d", n.waiting.Load(), want)
		}
		runtime.Gosched()
	}
}

// yieldStore is a blockstore whose calls yield the processor a few times, so
// that operations pile up on reserved keys, wait, mark and overtake.
type yieldStore struct{ Blockstore }

func (y yieldStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	for range 3 {
		runtime.Gosched()
	}
	return y.Blockstore.Get(ctx, c)
}

func (y yieldStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for range 3 {
		runtime.Gosched()
	}
	return y.Blockstore.PutMany(ctx, blks)
}

// Stress: operations on few keys, with a store that yields, so that they
// keep waiting for each other's reservations and marks, some giving up as
// their ctx is cancelled. Nothing deadlocks, and once every subscription is
// removed no want, reservation or mark is left.
//
// With slow consumers (subtest "slow"), the subscriptions read nothing and
// are ended past WithMaxPending, some of those ends left pending with the
// operation that held up one of their keys (Subscription.closeSlow): every
// pending end completes, and Close waits for none left behind.
func TestIO_StressWaitersAndMarks(t *testing.T) {
	t.Run("readers", func(t *testing.T) { stressWaitersAndMarks(t, false) })
	t.Run("slow", func(t *testing.T) { stressWaitersAndMarks(t, true) })
}

func stressWaitersAndMarks(t *testing.T, slow bool) {
	opts := []Option{WithShards(2)}
	if slow {
		opts = append(opts, WithBufferSize(1), WithMaxPending(1))
	}
	n, _ := newWithCancels(t, yieldStore{memStore()}, opts...)
	ended := func(err error) bool { return slow && errors.Is(err, ErrSlowConsumer) } // past WithMaxPending
	b := mkBlocks("marks", 8)
	keys := keysOf(b)
	var wg sync.WaitGroup
	finished := make(chan struct{})
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 300 {
				s, err := n.NewSubscription(uint64(w*1000 + i))
				if err != nil {
					t.Error(err)
					return
				}
				pick := func() []cid.Cid {
					ks := make([]cid.Cid, 1+r.IntN(4))
					for j := range ks {
						ks[j] = keys[r.IntN(len(keys))]
					}
					return ks
				}
				for range 4 {
					switch r.IntN(4) {
					case 0:
						c, cancel := context.WithCancel(ctx)
						if r.IntN(3) == 0 {
							cancel() // may end a wait, or refuse the call at once
						}
						if err := s.Subscribe(c, pick()...); err != nil && !errors.Is(err, context.Canceled) && !ended(err) {
							t.Error(err)
						}
						cancel()
					case 1:
						s.Unsubscribe(pick()...)
					case 2:
						blk := b[r.IntN(len(b))]
						from := "peer"
						if r.IntN(4) == 0 {
							from = ""
						}
						if err := n.Publish(ctx, ResponseMessage{From: from, Blocks: []blocks.Block{blk}, Haves: pick()}); err != nil {
							t.Error(err)
						}
					default:
						if err := s.Subscribe(ctx, pick()...); err != nil && !ended(err) {
							t.Error(err)
						}
					}
				}
				s.Remove()
				if err := s.Err(); err != nil && !ended(err) {
					t.Error(err)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(finished) }()
	done(t, finished, "the stressing operations")
	requireIndexEmpty(t, n)
	if slow {
		t.Logf("slow-consumer ends left pending: %d", n.parkSeq.Load())
	}
}

// A waiter whose ctx ends while it waits returns its ctx's error and leaves
// no mark behind: an operation that started after it, which waited for it,
// proceeds as soon as the reservation they both waited for is released.
func TestIO_CancelledWaiterLeavesNoMark(t *testing.T) {
	st := newStallStore()
	n, _ := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("cancelled-waiter", 2)
	kA, kB := b[0].Cid(), b[1].Cid()
	holder := mustSub(t, n, 1)
	require.NoError(t, holder.Subscribe(ctx, kA))
	releaseA := st.stall(t, kA)
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[:1]}) }()
	require.Equal(t, kA, <-st.entered)
	u, releaseY, subscribedY := st.reserveByGet(t, n, 4, kB, mkBlocks("cancelled-waiter-y", 1)[0].Cid())

	waiter := mustSub(t, n, 2)
	wctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- waiter.Subscribe(wctx, kA, kB) }() // waits for kA, marks kA and kB
	waitWaiting(t, n, 1)
	releaseY() // kB free, and marked; the waiter still waits for kA
	require.NoError(t, <-subscribedY)
	later := mustSub(t, n, 3)
	subscribed := make(chan error, 1)
	go func() { subscribed <- later.Subscribe(ctx, kB) }() // waits for the waiter's mark on kB
	waitWaiting(t, n, 2)

	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled)
	select {
	case err := <-subscribed:
		require.NoError(t, err)
	case <-time.After(hang):
		t.Fatal("the later Subscribe still waits: the cancelled waiter left its mark on kB")
	}
	require.False(t, waiter.Wants(kA) || waiter.Wants(kB), "the cancelled Subscribe added no want")
	releaseA()
	require.NoError(t, <-published)
	waiter.Remove()
	later.Remove()
	holder.Remove()
	u.Remove()
	requireIndexEmpty(t, n)
}

// Close waits for the operations in the blockstore, even one that no
// subscription's close waits for: a local Publish stores a block nobody wants
// (G4 stores local blocks always), so only Close's wait for the operations in
// I/O keeps Close from returning before that block is stored. (Found by the
// mutation check: without that wait every other test passed.) The test waits
// until Close is parked waiting, or has returned, which would be the bug.
func TestClose_WaitsForAStalledPublishNobodyWaitsFor(t *testing.T) {
	st := newStallStore()
	n := New(st)
	b := mkBlocks("close-waits-for-io", 1)[0]
	release := st.stall(t, b.Cid())
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
	require.Equal(t, b.Cid(), <-st.entered)

	closed := make(chan struct{})
	go func() { defer close(closed); assert.NoError(t, n.Close()) }()
	for deadline := time.Now().Add(hang); !stacks.Parked([]string{"(*Notifier).close", "sync.(*WaitGroup).Wait"}, nil); runtime.Gosched() {
		select {
		case <-closed:
			t.Fatal("Close returned while a Publish was still in its PutMany")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Close neither returned nor waited")
		}
	}
	release()
	done(t, closed, "Close")
	has, err := st.Has(ctx, b.Cid())
	require.NoError(t, err)
	require.True(t, has, "once Close has returned, the Publish in progress has taken effect")
	require.NoError(t, <-published)
}

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
		{"Get", func(t *testing.T, n *Notifier, st *stallStore, z blocks.Block) (func(), chan error) {
			release := st.stall(t, z.Cid())
			other := mustSub(t, n, 2)
			done := make(chan error, 1)
			go func() { done <- other.Subscribe(ctx, z.Cid(), z.Cid()) }() // two keys: the general path, which reserves
			require.Equal(t, z.Cid(), <-st.entered)
			return release, done
		}},
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
				synctest.Wait()
				select {
				case err := <-done:
					require.NoError(t, err)
				default:
					release()
					require.NoError(t, <-done)
					t.Fatalf("the %s of A waited for the stalled Get of B (G11)", tc.name)
				}
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

// An Unsubscribe(A) asleep behind an older waiter's mark on A (W, itself
// waiting for a stalled PutMany of C) wakes when its subscription's want of
// A ends meanwhile (delivered by O, older than W): it no longer needs A, and
// must not sleep on until the stalled PutMany of C returns (G11). It has a
// nudge, as a close has (TestIO_CloseWakesWhenItsOwnWantEnds); it once had
// none (review).
func TestIO_UnsubscribeWakesWhenItsWantEnds(t *testing.T) {
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

		pubO := make(chan error, 1) // O: waits for X, A marked
		go func() { pubO <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bX, bA}}) }()
		synctest.Wait()
		pubW := make(chan error, 1) // W: younger than O, waits (for C, in the end), A marked
		go func() { pubW <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bC, bA}}) }()
		synctest.Wait()
		releaseY() // A free, marked by O and W
		require.NoError(t, <-subY)
		synctest.Wait()
		unsubscribed := goAsleep(t, "Unsubscribe(A)", func() error { s.Unsubscribe(kA); return nil }) // on W's mark on A

		releaseX() // P_X, then O go on: O delivers A to s, whose want of A ends
		require.NoError(t, <-pubX)
		require.NoError(t, <-pubO)
		synctest.Wait()
		require.False(t, s.Wants(kA))
		m := recv(t, s)
		require.Len(t, m.Blocks, 1)
		require.Equal(t, kA, m.Blocks[0].Cid())
		returnsNow(t, unsubscribed, releaseC, "Unsubscribe(A) by a subscription that no longer wants A slept on until a stalled PutMany of C returned (G11)")
		releaseC()
		require.NoError(t, <-pubC)
		require.NoError(t, <-pubW)
	})
}

// A Subscribe(A) asleep behind an older waiter's mark on A (W, itself
// waiting for a stalled PutMany of C) wakes and returns when its
// subscription starts wanting A meanwhile (by O, a Subscribe of A older than
// W): it has nothing left to do for A, and must not sleep on until the
// stalled PutMany of C returns (G11). Its wait ends as an Unsubscribe's does
// when its want ends (TestIO_UnsubscribeWakesWhenItsWantEnds); it once had
// no nudge (review).
func TestIO_SubscribeWakesWhenItsWantBegins(t *testing.T) {
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

		older := make(chan error, 1) // O: waits for Z, A marked
		go func() { older <- s.Subscribe(ctx, kA, kZ) }()
		synctest.Wait()
		pubW := make(chan error, 1) // W: younger than O, waits for C, A marked
		go func() { pubW <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bC, bA}}) }()
		synctest.Wait()
		releaseY() // A free, marked by O and W
		require.NoError(t, <-subY)
		synctest.Wait()
		younger := goAsleep(t, "Subscribe(A)", func() error { return s.Subscribe(ctx, kA) }) // on W's mark on A

		releaseZ() // P_Z, then O go on: O records s's want of A
		require.NoError(t, <-pubZ)
		require.NoError(t, <-older)
		synctest.Wait()
		require.True(t, s.Wants(kA))
		returnsNow(t, younger, releaseC, "Subscribe(A) by a subscription that wants A already slept on until a stalled PutMany of C returned (G11)")
		releaseC() // W delivers A to s
		require.NoError(t, <-pubC)
		require.NoError(t, <-pubW)
		require.False(t, s.Wants(kA))
		var got []cid.Cid
		for len(got) < 2 && len(s.Messages()) > 0 {
			for _, blk := range recv(t, s).Blocks {
				got = append(got, blk.Cid())
			}
		}
		require.ElementsMatch(t, []cid.Cid{kZ, kA}, got, "O finds Z, W delivers A")
	})
}

// A Subscribe(B, A) waiting for a stalled PutMany of B lets go of A once its
// subscription starts wanting A (by O, an older Subscribe of A): it has
// nothing left to do for A, so its mark on A must no longer hold up other
// operations on A, which would wait for B's PutMany (G11). The operations
// asleep on that mark wake as the want begins; the mark stays, dormant,
// holding again should the want end while the Subscribe still waits.
func TestIO_WaitingSubscribeLetsGoOfAKeyItsSubscriptionStartsWanting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st)
		b := mkBlocks("subscribe-lets-go-want-begins", 3)
		bA, bZ, bB := b[0], b[1], b[2]
		kA := bA.Cid()
		s := mustSub(t, n, 1)
		w := st.waitMarking(t, n, s, kA, bZ, bB, "subscribe-lets-go")
		other := mustSub(t, n, 2)
		done := goAsleep(t, "other.Subscribe(A)", func() error { return other.Subscribe(ctx, kA) }) // on X's mark on A

		w.releaseOlder() // P_Z, then O go on: O records s's want of A
		returnsNow(t, done, w.releaseB, "Subscribe(A) by another subscription waited for a stalled PutMany of B, behind the mark on A of a Subscribe whose subscription wants A already (G11)")
		require.True(t, other.Wants(kA))
		select {
		case err := <-w.waiting:
			t.Fatalf("X returned %v while B's PutMany, which it waits for, is stalled", err)
		default:
		}
		w.releaseYounger()
		require.True(t, s.Wants(kA))
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
