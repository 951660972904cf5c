package bitswapcompat

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	notifier "github.com/bitswapsync/notifier"
)

const peerA, peerB = peer.ID("peer-a"), peer.ID("peer-b")

// Both constructors must give a PubSub that works on its own: NewPubSub, and
// New with no session interest recorded.
func eachPubSub(t *testing.T, bs func() *faultyStore, f func(t *testing.T, ps *PubSub)) {
	t.Run("NewPubSub", func(t *testing.T) {
		var store *faultyStore
		if bs != nil {
			store = bs()
		}
		ps := newTestPubSub(store)
		defer ps.Shutdown()
		f(t, ps)
	})
	t.Run("New", func(t *testing.T) {
		var ps *PubSub
		if bs != nil {
			ps, _ = New(bs())
		} else {
			ps, _ = New(nil)
		}
		defer ps.Shutdown()
		f(t, ps)
	})
}

func newTestPubSub(store *faultyStore) *PubSub {
	if store == nil {
		return NewPubSub(nil)
	}
	return NewPubSub(store)
}

func memStore() *faultyStore { return &faultyStore{Blockstore: newStore()} }

// As boxo's: a call for no keys is over before it starts.
func TestPubSub_SubscribeWithoutKeysIsClosed(t *testing.T) {
	eachPubSub(t, nil, func(t *testing.T, ps *PubSub) {
		requireReceived(t, ps.Subscribe(t.Context()), true)
		requireReceived(t, ps.Subscribe(t.Context(), []cid.Cid{}...), true)
		requireIdle(t, ps, nil)
	})
}

func TestPubSub_ChannelIsBufferedToKeys(t *testing.T) {
	eachPubSub(t, nil, func(t *testing.T, ps *PubSub) {
		blks := newBlocks(t, 3)
		keys := append(cidsOf(blks...), blks[0].Cid()) // a duplicate counts too
		ch := ps.Subscribe(t.Context(), keys...)
		require.Equal(t, len(keys), cap(ch))
		ps.Publish(peerA, blks...) // nobody reads: it must not block
		requireReceived(t, ch, true, blks...)
	})
}

func TestPubSub_DeliversEachKeyOnceThenCloses(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		blks := newBlocks(t, 2)
		ch := ps.Subscribe(t.Context(), blks[0].Cid(), blks[1].Cid(), blks[0].Cid())
		ps.Publish(peerA, blks[0], blks[0])
		ps.Publish(peerB, blks[0])
		requireReceived(t, ch, false, blks[0])
		ps.Publish(peerB, blks[1])
		ps.Publish(peerA, blks[1])
		requireReceived(t, ch, true, blks[1])
		requireIdle(t, ps, nil)
	})
}

// Calls small enough for their keys to be scanned (at most pendingScan
// keys, duplicates included) and larger ones, whose keys are hashed, behave
// alike: each distinct key once, duplicates ignored, whether its block was
// stored before the call or published after it, and the channel closed after
// the last. Each case checks which of the two it ran.
func TestPubSub_CallsOfEverySize(t *testing.T) {
	for _, c := range []struct{ distinct, dups int }{
		// scanned: at most pendingScan keys, duplicates included
		{1, 0},
		{1, 2},
		{2, 2},
		{pendingScan - 2, 2},
		{pendingScan, 0}, // every bit used
		// hashed
		{pendingScan - 1, 2},
		{pendingScan + 1, 0},
		{3 * pendingScan, 2},
	} {
		scan := c.distinct+c.dups <= pendingScan
		t.Run(fmt.Sprintf("%d+%d", c.distinct, c.dups), func(t *testing.T) {
			eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
				n := c.distinct
				blks := newBlocks(t, n)
				stored, later := blks[:n/2], blks[n/2:]
				require.NoError(t, NotifierOf(ps).Publish(t.Context(), notifier.ResponseMessage{Blocks: stored}))
				keys := cidsOf(blks...)
				for i := range c.dups { // duplicates: ignored
					keys = append(keys, keys[(n-1)*(i%2)])
				}
				ch := ps.Subscribe(t.Context(), keys...)
				require.Equal(t, len(keys), cap(ch))
				requireScan(t, ps, scan)
				requireReceived(t, ch, false, stored...)
				for _, b := range later[:len(later)-1] {
					ps.Publish(peerA, b, b)
					ps.Publish(peerB, b)
				}
				requireReceived(t, ch, false, later[:len(later)-1]...)
				ps.Publish(peerB, stored...) // delivered already: nothing
				requireReceived(t, ch, false)
				ps.Publish(peerA, later[len(later)-1])
				requireReceived(t, ch, true, later[len(later)-1])
				requireIdle(t, ps, nil)
			})
		})
	}
}

// requireScan checks that ps has one live call, which keeps its keys in a
// scanned list if scan is set, else in a map.
func requireScan(t *testing.T, ps *PubSub, scan bool) {
	t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Len(t, ps.calls, 1)
	for c := range ps.calls {
		c.mu.Lock()
		hashed := c.left.set != nil
		c.mu.Unlock()
		require.Equal(t, scan, !hashed, "keys scanned")
	}
}

// neverDone is a context that can never be cancelled and says so as the
// context package allows, with a nil Done channel, without being Background.
type neverDone struct{ context.Context }

func (neverDone) Done() <-chan struct{} { return nil }

// A context whose Done is nil never ends a call: its blocks or Shutdown do.
func TestPubSub_ContextWithoutDone(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		blks := newBlocks(t, 2)
		ctx := neverDone{context.Background()}
		done := ps.Subscribe(ctx, blks[0].Cid())
		open := ps.Subscribe(ctx, blks[1].Cid(), cid.Undef)
		ps.Publish(peerA, blks...)
		requireReceived(t, done, true, blks[0])
		requireReceived(t, open, false, blks[1])
		ps.Shutdown()
		requireReceived(t, open, true)
	})
}

// A subscription is live when Subscribe returns, with or without a
// blockstore, and with no session interest recorded.
func TestPubSub_LiveWhenSubscribeReturns(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		blk := newBlocks(t, 1)[0]
		ch := ps.Subscribe(t.Context(), blk.Cid())
		ps.Publish(peerA, blk)
		requireReceived(t, ch, true, blk)
	})
}

// The blockstore check happens inside the subscription: a block stored just
// before Subscribe (here by a local Publish with nobody waiting) is delivered.
func TestPubSub_BlockStoredBeforeSubscribeIsDelivered(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		blks := newBlocks(t, 2)
		ps.Publish("", blks[0])
		ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
		requireReceived(t, ch, false, blks[0])
		ps.Publish(peerA, blks[1])
		requireReceived(t, ch, true, blks[1])
		requireIdle(t, ps, nil)
	})
}

// A local Publish racing a Subscribe of the same key always ends in delivery:
// either the Publish stores it before the check, or it delivers it after.
func TestPubSub_LocalPublishRacingSubscribeIsNeverLost(t *testing.T) {
	ps := NewPubSub(newStore())
	defer ps.Shutdown()
	for _, blk := range newBlocks(t, 200) {
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			ps.Publish("", blk)
		})
		close(start)
		ch := ps.Subscribe(t.Context(), blk.Cid())
		wg.Wait()
		requireReceived(t, ch, true, blk)
	}
	requireIdle(t, ps, nil)
}

func TestPubSub_StoresLocalAndWantedBlocksOnly(t *testing.T) {
	store := newStore()
	ps := NewPubSub(store)
	defer ps.Shutdown()
	blks := newBlocks(t, 3)
	ch := ps.Subscribe(t.Context(), blks[0].Cid())
	ps.Publish(peerA, blks[0], blks[1]) // blks[1]: remote, unwanted
	ps.Publish("", blks[2])             // local: stored though unwanted
	requireReceived(t, ch, true, blks[0])
	for i, want := range []bool{true, false, true} {
		has, err := store.Has(t.Context(), blks[i].Cid())
		require.NoError(t, err)
		require.Equal(t, want, has, "block %d stored", i)
	}
}

// A subscriber never sees a block that the blockstore does not have yet.
func TestPubSub_StoresBeforeNotifying(t *testing.T) {
	store := newStore()
	var hadIt []bool
	ps := NewPubSub(store, WithBlockWrapper(func(b blocks.Block, _ peer.ID, _ time.Duration) blocks.Block {
		has, _ := store.Has(context.Background(), b.Cid())
		hadIt = append(hadIt, has) // one publisher: no lock needed
		return b
	}))
	defer ps.Shutdown()
	blks := newBlocks(t, 2)
	ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
	ps.Publish(peerA, blks...)
	requireReceived(t, ch, true, blks...)
	require.Equal(t, []bool{true, true}, hadIt)
}

func TestPubSub_WrapperSeesSenderAndDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type seen struct {
			from  peer.ID
			delay time.Duration
		}
		var got []seen
		ps := NewPubSub(nil, WithBlockWrapper(func(b blocks.Block, from peer.ID, d time.Duration) blocks.Block {
			got = append(got, seen{from, d})
			return b
		}))
		defer ps.Shutdown()
		blks := newBlocks(t, 2)
		ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
		time.Sleep(3 * time.Second) // the bubble's fake clock: sets the delay, lets nothing happen
		ps.Publish(peerA, blks[0])
		time.Sleep(2 * time.Second)
		var zero peer.ID
		ps.Publish(zero, blks[1])
		requireReceived(t, ch, true, blks...)
		require.Equal(t, []seen{{peerA, 3 * time.Second}, {"", 5 * time.Second}}, got)
	})
}

// Publish is paced as boxo's is (PubSub.pace): a Publish that hands a block
// to a call starts the pace goroutine, unless the last one has not run yet,
// and never waits; one that hands none
// (here a copy of a block just handed) waits until the last pace goroutine
// has run and then sleeps out what is left of paceWindow after the last
// Publish that handed a block; one that hands nothing when no Publish ever
// handed a block, or after the window, returns at once. In the bubble the
// clock moves only while every goroutine is blocked, so a Publish that sleeps
// shows in the fake time that it takes.
func TestPubSub_PublishOfACopyIsPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacedCopy()
		defer p.ps.Shutdown()
		p.blks = newBlocks(t, 3)
		ch := p.ps.Subscribe(t.Context(), p.blks[0].Cid())
		ch2 := p.ps.Subscribe(t.Context(), p.blks[2].Cid())
		p.firstHandStartsThePace(t, ch)
		p.copyWaitsForThePaceAndTheWindow(t, ch2)
		p.copyLaterInTheWindowSleepsTheRest(t)
	})
}

// pacedCopy is the scene of TestPubSub_PublishOfACopyIsPaced: a PubSub
// without a blockstore whose pace goroutine counts its runs in paces and
// then blocks until hold is closed, and the blocks the calls want.
type pacedCopy struct {
	ps    *PubSub
	hold  chan struct{}
	paces atomic.Int32
	blks  []blocks.Block
}

// newPacedCopy makes the PubSub, its pace goroutine held.
func newPacedCopy() *pacedCopy {
	p := &pacedCopy{ps: NewPubSub(nil), hold: make(chan struct{})}
	p.ps.pacer = func() { p.paces.Add(1); <-p.hold }
	return p
}

// firstHandStartsThePace: a Publish of a block no call wants, before any
// block was handed, returns at once and starts no pace; the first Publish
// that hands a block (blks[0], to ch) does not wait and starts one.
func (p *pacedCopy) firstHandStartsThePace(t *testing.T, ch <-chan blocks.Block) {
	t.Helper()
	ps, blks := p.ps, p.blks
	require.Zero(t, took(func() { ps.Publish(peerA, blks[1]) })) // wanted by no call, nothing handed yet: returns
	synctest.Wait()
	require.Zero(t, p.paces.Load())
	require.Zero(t, took(func() { ps.Publish(peerA, blks[0]) }), "a Publish that hands a block must not wait")
	synctest.Wait()
	require.EqualValues(t, 1, p.paces.Load())
	requireReceived(t, ch, true, blks[0])
}

// copyWaitsForThePaceAndTheWindow: a copy published a fifth into the window
// waits while the first pace goroutine is held; meanwhile a Publish that
// hands blks[2] (to ch2) and one without blocks do not wait, and the former
// moves the window without starting a second pace. Once the pace goroutine
// has run, the copy sleeps out the whole moved window.
func (p *pacedCopy) copyWaitsForThePaceAndTheWindow(t *testing.T, ch2 <-chan blocks.Block) {
	t.Helper()
	ps, blks := p.ps, p.blks
	time.Sleep(paceWindow / 5)
	returned := make(chan time.Duration, 1)
	go func() { returned <- took(func() { ps.Publish(peerB, blks[0]) }) }() // a copy: hands nothing, waits
	synctest.Wait()
	select {
	case <-returned:
		t.Fatal("the Publish of a copy returned before the pace goroutine ran")
	default:
	}
	// Hands a new block: does not wait, and starts no second pace while
	// the first has not run, but moves the window.
	require.Zero(t, took(func() { ps.Publish(peerB, blks[2]) }), "a Publish that hands a block must not wait")
	// A message without blocks, which boxo's client would not publish, does not wait.
	require.Zero(t, took(func() {
		require.NoError(t, PublishMessage(t.Context(), ps, notifier.ResponseMessage{From: string(peerA), Haves: cidsOf(blks[1])}))
	}))
	requireReceived(t, ch2, true, blks[2])
	close(p.hold)
	require.Equal(t, paceWindow, <-returned, "the copy must sleep out the window of the last Publish that handed a block")
	synctest.Wait()
	require.EqualValues(t, 1, p.paces.Load(), "a Publish that handed a block while the pace goroutine had not run started another")
}

// copyLaterInTheWindowSleepsTheRest: a copy later in the window sleeps only
// what is left of it; after the window it returns at once.
func (p *pacedCopy) copyLaterInTheWindowSleepsTheRest(t *testing.T) {
	t.Helper()
	ps, blks := p.ps, p.blks
	ch3 := ps.Subscribe(t.Context(), blks[1].Cid())
	require.Zero(t, took(func() { ps.Publish(peerA, blks[1]) }))
	requireReceived(t, ch3, true, blks[1])
	synctest.Wait() // the second pace goroutine has run
	time.Sleep(paceWindow * 2 / 5)
	require.Equal(t, paceWindow*3/5, took(func() { ps.Publish(peerB, blks[1]) }), "a copy must sleep what is left of the window, no more")
	require.Zero(t, took(func() { ps.Publish(peerA, blks[1]) }), "a copy after the window must not sleep")
	require.EqualValues(t, 2, p.paces.Load())
}

func TestPubSub_ContextDoneClosesChannel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps, sim := New(memStore())
		defer ps.Shutdown()
		blks := newBlocks(t, 2)
		ctx, cancel := context.WithCancel(t.Context())
		ch := ps.Subscribe(ctx, cidsOf(blks...)...)
		ps.Publish(peerA, blks[0])
		cancel()
		synctest.Wait()
		requireReceived(t, ch, true, blks[0])
		requireIdle(t, ps, sim)
		ps.Publish(peerA, blks[1]) // nobody wants it any more: dropped
		requireIdle(t, ps, sim)
	})
}

// A call whose context ends while a Publish stores one of its keys is
// closed only once it has left the Notifier, which waits for that store: a
// reader who sees the channel closed finds nothing of the call left, as
// Subscribe's doc says (boxo closes at once). Nothing reaches the channel
// after the end, though the Publish then delivers to the call it planned
// for.
func TestPubSub_ContextEndClosesTheChannelOnceTheCallHasLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		blks := newBlocks(t, 2)
		st := &failOrStallPut{
			faultyStore: &faultyStore{Blockstore: newStore()},
			stall:       blks[1].Cid(),
			entered:     make(chan struct{}),
			release:     make(chan struct{}),
		}
		ps := NewPubSub(st)
		defer ps.Shutdown()
		ctx, cancel := context.WithCancel(t.Context())
		ch := ps.Subscribe(ctx, cidsOf(blks...)...)
		published := make(chan struct{})
		go func() { defer close(published); ps.Publish(peerA, blks[1]) }() // wanted: its PutMany stalls
		<-st.entered
		cancel()
		synctest.Wait() // the end is under way: it waits for the stalled store
		_, closedEarly := drainNow(ch)
		wants := NotifierOf(ps).Stats().Wants
		close(st.release) // before any check can fail: nothing is left blocked in the bubble
		<-published
		synctest.Wait()
		require.False(t, closedEarly, "the channel was closed while the call still had %d wants", wants)
		requireReceived(t, ch, true)
		requireIdle(t, ps, nil)
	})
}

func TestPubSub_ContextAlreadyDone(t *testing.T) {
	eachPubSub(t, nil, func(t *testing.T, ps *PubSub) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		requireReceived(t, ps.Subscribe(ctx, newBlocks(t, 1)[0].Cid()), true)
		requireIdle(t, ps, nil)
	})
}

// A waiting call costs no goroutine, and none is left once calls complete or
// are cancelled.
func TestPubSub_NoGoroutinePerCall(t *testing.T) {
	defer goleak.VerifyNone(t)
	ps, sim := New(nil)
	defer ps.Shutdown()
	blks := newBlocks(t, 1000)
	ctx, cancel := context.WithCancel(t.Context())
	chans := make([]<-chan blocks.Block, len(blks))
	for i, b := range blks {
		chans[i] = ps.Subscribe(ctx, b.Cid())
	}
	goleak.VerifyNone(t) // 1000 calls waiting, no goroutine
	ps.Publish(peerA, blks[:500]...)
	for i := range 500 {
		requireReceived(t, chans[i], true, blks[i])
	}
	cancel()
	for _, ch := range chans[500:] {
		for range ch { // closed by the AfterFunc of each call
		}
	}
	goleak.VerifyNone(t)
	requireIdle(t, ps, sim)
}

func TestPubSub_ShutdownClosesLiveChannels(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		blks := newBlocks(t, 3)
		partial := ps.Subscribe(t.Context(), cidsOf(blks...)...)
		waiting := ps.Subscribe(context.Background(), blks[2].Cid())
		ps.Publish(peerA, blks[0])
		ps.Shutdown()
		requireReceived(t, partial, true, blks[0])
		requireReceived(t, waiting, true)

		requireReceived(t, ps.Subscribe(t.Context(), blks[0].Cid()), true)
		ps.Publish("", blks[2]) // does nothing
		ps.Shutdown()           // twice is fine
		require.Zero(t, NotifierOf(ps).Stats())
	})
}

func TestPubSub_ConcurrentShutdown(t *testing.T) {
	ps := NewPubSub(nil)
	blks := newBlocks(t, 50)
	chans := make([]<-chan blocks.Block, len(blks))
	for i, b := range blks {
		chans[i] = ps.Subscribe(context.Background(), b.Cid())
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(ps.Shutdown)
	}
	wg.Go(func() { ps.Publish(peerA, blks...) })
	wg.Wait()
	for _, ch := range chans {
		_, closed := drainNow(ch)
		require.True(t, closed)
	}
}

// A failed check is a miss, as boxo's block service takes a failed Get in
// GetBlocks: the call waits, here even for a block that the store holds but
// failed to read, and gets it from the next Publish, as boxo's gets it from
// the network (or from a re-check, recheckFirst later: recheck_test.go; the
// bubble's clock does not move here, so none comes). The error goes to
// WithErrorFunc, once per call. A failed store ends the calls waiting for
// the message's blocks.
func TestPubSub_BlockstoreErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := memStore()
		var errs []error
		ps := NewPubSub(store, WithErrorFunc(func(err error) { errs = append(errs, err) }))
		defer ps.Shutdown()
		blks := newBlocks(t, 3)
		ps.Publish("", blks[2]) // stored

		store.failGet.Store(true)
		one := ps.Subscribe(t.Context(), blks[0].Cid())
		both := ps.Subscribe(t.Context(), blks[0].Cid(), blks[2].Cid())
		requireReceived(t, one, false)
		requireReceived(t, both, false)
		require.Len(t, errs, 2, "one error per call")
		require.ErrorIs(t, errs[0], errFault)
		require.ErrorIs(t, errs[1], errFault)
		store.failGet.Store(false)
		ps.Publish(peerA, blks[0], blks[2])
		requireReceived(t, one, true, blks[0])
		requireReceived(t, both, true, blks[0], blks[2])
		requireIdle(t, ps, nil)
		errs = errs[:0]

		ch := ps.Subscribe(t.Context(), blks[1].Cid())
		store.failPut.Store(true)
		ps.Publish(peerA, blks[1]) // not stored, so not delivered: the call ends without it (failWaiting)
		require.Len(t, errs, 1)
		require.ErrorIs(t, errs[0], errFault)
		requireEnded(t, ch)
		requireIdle(t, ps, nil)
		store.failPut.Store(false)
		ch = ps.Subscribe(t.Context(), blks[1].Cid()) // asked again, as boxo's caller would
		ps.Publish(peerA, blks[1])
		requireReceived(t, ch, true, blks[1])
		requireIdle(t, ps, nil)
	})
}

// A failed store ends the calls that wait for a block of the message: in
// boxo's client the sessions have let go of those keys (CANCELs sent) before
// the Publish, so the block would never come again, and a GetBlock waited
// for its ctx. boxo's own PubSub hands the block and the block service's Put
// then fails at once; here the call's channel closes right after, once the
// call has left the Notifier (on a goroutine: failWaiting). Calls waiting
// for other keys are untouched, and PublishMessage does the same. Found by
// review.
func TestPubSub_FailedStoreEndsTheCallsWaitingForItsBlocks(t *testing.T) {
	store := memStore()
	ps, sim := New(store) // MIGRATION.md's store wiring
	defer ps.Shutdown()
	blks := newBlocks(t, 4)
	const ses = 7
	one := ps.Subscribe(t.Context(), blks[0].Cid())                 // a GetBlock
	many := ps.Subscribe(t.Context(), blks[0].Cid(), blks[1].Cid()) // a GetBlocks
	other := ps.Subscribe(t.Context(), blks[2].Cid())
	sim.RecordSessionInterest(ses, cidsOf(blks[:3]...))

	// receiveBlocksFrom's order: SplitWantedUnwanted, the session lets go
	// (RemoveSessionWants: CANCEL), then Publish.
	store.failPut.Store(true)
	wanted, _ := sim.SplitWantedUnwanted(blks[:1])
	require.Equal(t, cidsOf(blks[0]), sim.RemoveSessionWants(ses, cidsOf(blks[0])))
	ps.Publish(peerA, wanted...)
	requireEnded(t, one)
	requireEnded(t, many)
	requireReceived(t, other, false)

	// PublishMessage too.
	msgCall := ps.Subscribe(t.Context(), blks[3].Cid())
	err := PublishMessage(t.Context(), ps, notifier.ResponseMessage{From: string(peerA), Blocks: blks[3:]})
	require.ErrorIs(t, err, errFault)
	requireEnded(t, msgCall)
	requireReceived(t, other, false)

	store.failPut.Store(false)
	ps.Publish(peerA, blks[2])
	requireReceived(t, other, true, blks[2])
	sim.RemoveSession(ses)
	requireIdle(t, ps, nil)
}

// Publish's doc: after Shutdown it does nothing. It still paced: a Publish
// right after one that handed a block slept out the rest of paceWindow,
// though a shut-down PubSub hands nothing (review).
func TestPubSub_PublishAfterShutdownIsNotPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps, blks := pacedPubSub(t)
		ps.Shutdown()
		start := time.Now()
		ps.Publish(peerB, blks[1])
		require.Zero(t, time.Since(start), "a Publish after Shutdown slept")
	})
}
