package bitswapcompat

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// flakyGets is a blockstore whose Get of a key fails as many times as set
// for it (fails), forever for a key set to -1, or parks until gate is closed
// for a key in gated; it counts every Get by key.
type flakyGets struct {
	*faultyStore
	mu    sync.Mutex
	fails map[cid.Cid]int
	gets  map[cid.Cid]int
	gated map[cid.Cid]bool
	gate  chan struct{}
}

func newFlakyGets() *flakyGets {
	return &flakyGets{
		faultyStore: memStore(),
		fails:       map[cid.Cid]int{},
		gets:        map[cid.Cid]int{},
		gated:       map[cid.Cid]bool{},
		gate:        make(chan struct{}),
	}
}

func (s *flakyGets) Get(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	s.mu.Lock()
	s.gets[k]++
	fail, gated := s.fails[k], s.gated[k]
	if fail > 0 {
		s.fails[k]--
	}
	s.mu.Unlock()
	if gated {
		<-s.gate
	}
	if fail != 0 {
		return nil, errFault
	}
	return s.faultyStore.Get(ctx, k)
}

func (s *flakyGets) set(k cid.Cid, fails int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails[k] = fails
}

func (s *flakyGets) count(k cid.Cid) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[k]
}

// errCount collects what WithErrorFunc hands over, from any goroutine.
type errCount struct {
	mu   sync.Mutex
	errs []error
}

func (e *errCount) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

func (e *errCount) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.errs)
}

// storedButUnread returns a PubSub over a store that holds the first of n
// new blocks, stored before any call, but fails the first fails Gets of it,
// and what the PubSub's error function gets.
func storedButUnread(t *testing.T, n, fails int) (*flakyGets, *errCount, *PubSub, []blocks.Block) {
	t.Helper()
	store := newFlakyGets()
	errs := &errCount{}
	ps := NewPubSub(store, WithErrorFunc(errs.add))
	blks := newBlocks(t, n)
	require.NoError(t, store.Put(t.Context(), blks[0]))
	store.set(blks[0].Cid(), fails)
	return store, errs, ps, blks
}

// A block stored before the call (a local add whose Publish nobody waited
// for), whose Get fails in the call's check, is found by a check of the
// call's keys recheckFirst later, and reaches the call. A key found missing
// then is not checked again: the Publish that brings it delivers it. Before
// the re-check, such a call waited until its ctx ended (the simulator's
// stalls under faults with blocks only a local add provides).
func TestPubSub_FailedCheckOfAStoredBlockIsCheckedAgain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra int // keys besides the stored one, not stored
	}{{"one key", 0}, {"three keys", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store, errs, ps, blks := storedButUnread(t, 1+tc.extra, 1)
				defer ps.Shutdown()

				start := time.Now()
				ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
				requireReceived(t, ch, false)
				require.Equal(t, 1, errs.len(), "the failed check is reported")
				b := <-ch
				require.Equal(t, blks[0], b)
				require.Equal(t, recheckFirst, time.Since(start), "found by the first re-check")
				require.Equal(t, 2, store.count(blks[0].Cid()), "Gets of the stored key")

				time.Sleep(4 * recheckMax)
				synctest.Wait()
				for _, blk := range blks[1:] {
					require.Equal(t, 2, store.count(blk.Cid()), "Gets of a missing key: the check and one re-check")
				}
				if tc.extra > 0 {
					ps.Publish(peerA, blks[1:]...)
				}
				requireReceived(t, ch, true, blks[1:]...)
				require.Equal(t, 1, errs.len(), "errors")
				requireIdle(t, ps, nil)
			})
		})
	}
}

// A re-check whose Get fails again checks again after twice the delay, up
// to recheckMax, and reports each failure.
func TestPubSub_RecheckBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, errs, ps, blks := storedButUnread(t, 2, 3) // the check and two re-checks fail
		defer ps.Shutdown()

		start := time.Now()
		ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
		require.Equal(t, blks[0], <-ch)
		require.Equal(t, 7*recheckFirst, time.Since(start), "re-checks after 100, 200 and 400 ms")
		require.Equal(t, 3, errs.len(), "the check's failure and two re-checks'")
		require.Equal(t, 4, store.count(blks[0].Cid()))
		require.Equal(t, 4, store.count(blks[1].Cid()), "the missing key is checked with the others while a Get fails")

		store.set(blks[1].Cid(), -1)
		time.Sleep(time.Hour)
		synctest.Wait()
		require.Equal(t, 4, store.count(blks[1].Cid()), "a call whose keys were all found or missing checks no more")

		// A Get that always fails: re-checks at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3
		// and 12.7 s, then every recheckMax (22.7, 32.7, ... s).
		ch2 := ps.Subscribe(t.Context(), blks[1].Cid())
		time.Sleep(time.Minute)
		synctest.Wait()
		at := store.count(blks[1].Cid())
		time.Sleep(3 * recheckMax)
		synctest.Wait()
		require.Equal(t, at+3, store.count(blks[1].Cid()), "delays grow to recheckMax and stay there")
		ps.Publish(peerA, blks[1])
		requireReceived(t, ch, true, blks[1])
		requireReceived(t, ch2, true, blks[1])
		requireIdle(t, ps, nil)
	})
}

// A call that ends, by its ctx, by a Publish or at Shutdown, is checked no
// more.
func TestPubSub_RecheckEndsWithTheCall(t *testing.T) {
	ends := map[string]func(ps *PubSub, cancel context.CancelFunc, blk blocks.Block){
		"ctx":      func(_ *PubSub, cancel context.CancelFunc, _ blocks.Block) { cancel() },
		"publish":  func(ps *PubSub, _ context.CancelFunc, blk blocks.Block) { ps.Publish(peerA, blk) },
		"shutdown": func(ps *PubSub, _ context.CancelFunc, _ blocks.Block) { ps.Shutdown() },
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newFlakyGets()
				ps := NewPubSub(store)
				defer ps.Shutdown()
				blk := newBlocks(t, 1)[0]
				store.set(blk.Cid(), -1)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				ch := ps.Subscribe(ctx, blk.Cid())
				time.Sleep(recheckFirst)
				synctest.Wait()
				require.Equal(t, 2, store.count(blk.Cid()), "the check and the first re-check")
				c := onlyCall(t, ps)
				end(ps, cancel, blk)
				synctest.Wait()
				_, closed := drainNow(ch)
				require.True(t, closed, "the call's channel")
				c.mu.Lock()
				require.Nil(t, c.retry, "the next re-check's timer, once the call ended")
				c.mu.Unlock()
				// A timer that fired just before the end, too late for
				// stopRetry, runs its re-check after it: it must find the
				// call ended and read nothing.
				c.recheck(ctx, recheckFirst)
				time.Sleep(time.Hour)
				synctest.Wait()
				require.Equal(t, 2, store.count(blk.Cid()), "Gets after the call ended")
			})
		})
	}
}

// onlyCall returns the one call that ps lists.
func onlyCall(t *testing.T, ps *PubSub) *call {
	t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Len(t, ps.calls, 1)
	for c := range ps.calls {
		return c
	}
	return nil
}

// The block that a re-check finds reaches every call waiting for it, not
// only the call re-checked: b waits for the key without a failed check (the
// block was not stored then), the block is then written behind the PubSub's
// back, and a's check of it fails.
func TestPubSub_RecheckHandsTheBlockToEveryCallWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newFlakyGets()
		ps := NewPubSub(store)
		defer ps.Shutdown()
		blk := newBlocks(t, 1)[0]
		b := ps.Subscribe(t.Context(), blk.Cid())
		require.NoError(t, store.Put(t.Context(), blk))
		store.set(blk.Cid(), 1)
		a := ps.Subscribe(t.Context(), blk.Cid())
		requireReceived(t, a, false)
		requireReceived(t, b, false)
		time.Sleep(recheckFirst)
		synctest.Wait()
		requireReceived(t, a, true, blk)
		requireReceived(t, b, true, blk)
		requireIdle(t, ps, nil)
	})
}

// Shutdown waits for a re-check under way, which holds up nothing else: a
// re-check is a blockstore call of the PubSub's, as a Subscribe's check is.
func TestShutdown_WaitsForARecheckUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newFlakyGets()
		ps := NewPubSub(store)
		blks := newBlocks(t, 2)
		store.set(blks[0].Cid(), 1)
		ch := ps.Subscribe(t.Context(), blks[0].Cid())
		store.mu.Lock()
		store.gated[blks[0].Cid()] = true
		store.mu.Unlock()
		time.Sleep(recheckFirst)
		synctest.Wait() // the re-check waits in its Get

		other := ps.Subscribe(t.Context(), blks[1].Cid())
		ps.Publish(peerA, blks[1])
		requireReceived(t, other, true, blks[1])

		done := make(chan struct{})
		go func() {
			ps.Shutdown()
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Shutdown returned while a re-check was under way")
		default:
		}
		close(store.gate)
		<-done
		requireReceived(t, ch, true)
		require.Equal(t, 2, store.count(blks[0].Cid()))
	})
}

// A re-check that finds a stored block publishes it, which stores it again
// (a local Publish always stores). When that needless store fails, the call
// stays: no session let go of its key, as failWaiting assumes of the calls
// it ends, and the failure only brings another re-check. Through
// PubSub.Publish, failWaiting ended the call without the block the re-check
// had just found (found by review).
func TestPubSub_RecheckWhoseStoreFailsKeepsTheCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, _, ps, blks := storedButUnread(t, 2, 1)
		defer ps.Shutdown()

		ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
		requireReceived(t, ch, false)
		store.failPut.Store(true) // a PutMany fails meanwhile (a store under faults)
		time.Sleep(recheckFirst)
		synctest.Wait() // the first re-check has run: its Get found blks[0]
		got, closed := drainNow(ch)
		require.False(t, closed, "the call ended, without the block the re-check found (got %d blocks)", len(got))

		store.failPut.Store(false)
		time.Sleep(time.Minute)
		synctest.Wait()
		got2, closed := drainNow(ch)
		require.Equal(t, cidsOf(blks[0]), cidsOf(append(got, got2...)...), "the stored block reaches the call")
		require.False(t, closed)
	})
}

// WithErrorFunc's function runs outside every lock and may call the PubSub
// back, Shutdown included. A re-check reported its failed Get while it was
// counted in ps.ending, so a Shutdown called from that report waited for the
// re-check that called it, for ever, and every later Shutdown with it
// (found by review). The failures are now reported once the re-check is
// uncounted.
func TestShutdown_FromTheErrorFuncOfARecheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newFlakyGets()
		blk := newBlocks(t, 1)[0]
		store.set(blk.Cid(), 2) // the check and the first re-check fail
		var ps *PubSub
		var n atomic.Int32
		done := make(chan struct{})
		ps = NewPubSub(store, WithErrorFunc(func(error) {
			if n.Add(1) == 2 { // the re-check's failure
				ps.Shutdown()
				close(done)
			}
		}))
		ch := ps.Subscribe(t.Context(), blk.Cid())
		time.Sleep(recheckFirst)
		synctest.Wait()
		require.Equal(t, int32(2), n.Load(), "the check's failure and the re-check's")
		select {
		case <-done:
		default:
			t.Error("Shutdown, called by the error function of a re-check, hangs: it waits for that re-check (ps.ending)")
			ps.endingDone() // let the test end: uncount the re-check, so that Shutdown returns
			<-done
		}
		requireReceived(t, ch, true)
	})
}
