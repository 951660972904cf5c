package bitswapcompat

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
)

// Found by review; what went wrong before the fix: a BlockWrapper that panics on a block that Subscribe finds in the
// blockstore (here only its first call panics). WithBlockWrapper's doc says
// the Notifier survives and the call's channel stays open until its context
// ends or Shutdown. But the panic leaves PubSub.Subscribe before started:
// the call is neither tracked (Shutdown does not know it) nor watched (its
// ctx does not end it), and c.subscribing stays set. Its request keeps the
// want of the key the blockstore lacked: the context's end does not end it,
// no CANCEL goes out, and when the block arrives the delivery completes the
// call but leaves its removal to a track that never runs, so the request
// stays in the Notifier until Shutdown.
func TestSubscribe_PanickingWrapperEndsTheCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		blks := newBlocks(t, 2)
		ks := cidsOf(blks...)
		bs := newStore()
		require.NoError(t, bs.Put(t.Context(), blks[0]))
		log := &cancelLog{}
		var wrapped atomic.Int32
		ps, _ := NewWithOptions(bs,
			WithNotifierOptions(notifier.WithCancelFunc(log.add)),
			WithBlockWrapper(func(b blocks.Block, _ peer.ID, _ time.Duration) blocks.Block {
				if wrapped.Add(1) == 1 {
					panic("wrapper")
				}
				return b
			}))
		n := NotifierOf(ps)
		ctx, cancel := context.WithCancel(context.Background())
		require.PanicsWithValue(t, "wrapper", func() { _ = ps.Subscribe(ctx, ks...) })
		cancel()
		synctest.Wait() // a context.AfterFunc of the call would have run by now
		assert.False(t, n.Wanted(ks[1]), "the want of a call whose context ended")
		assert.Equal(t, ks[1:], log.since(0), "the CANCEL of the key the blockstore lacked")

		ps.Publish(peer.ID(""), blks[1]) // completes the call
		assert.Equal(t, notifier.Stats{}, n.Stats(), "the Notifier after the call completed and Publish returned")
		ps.Shutdown()
	})
}

// Found by review; what went wrong before the fix: WithCancelFunc "exactly as notifier.WithCancelFunc does", whose
// doc now promises that the operation finishes before a panic goes on. If f
// panics inside RemoveSession, ReleaseAll finishes and the panic leaves
// RemoveSession between its two critical sections: the session stays in
// sim.sessions with leaving set and never closed. Every later
// RecordSessionInterest of that session ID waits for leaving for ever (and a
// second RemoveSession returns at once, doing nothing).
func TestRemoveSession_PanickingCancelFuncFreesTheSessionID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var armed atomic.Bool
		_, sim := NewWithOptions(nil, WithCancelFunc(panicsWhenArmed(&armed)))
		ks := cidsOf(newBlocks(t, 1)...)
		sim.RecordSessionInterest(1, ks)
		armed.Store(true)
		require.PanicsWithValue(t, "cancel", func() { _ = sim.RemoveSession(1) })
		armed.Store(false)

		recorded := make(chan struct{})
		go func() {
			defer close(recorded)
			sim.RecordSessionInterest(1, ks)
		}()
		synctest.Wait()
		select {
		case <-recorded:
		default:
			assert.Fail(t, "RecordSessionInterest of the session ID waits for ever for the RemoveSession that panicked")
			sim.mu.Lock()
			close(sim.sessions[1].leaving) // let the goroutine go, so that the bubble ends
			delete(sim.sessions, 1)
			sim.mu.Unlock()
			<-recorded
		}
		require.Equal(t, [][]cid.Cid{ks}, sim.FilterSessionInterested(1, ks), "session 1 wants ks again")
	})
}

// Found by review; what went wrong before the fix: Shutdown ends each live call (c.end, whose Remove reports the
// call's keys to the cancel function) in a plain loop and closes the
// Notifier after it, inside a sync.Once. If the cancel function panics in
// the first end, that call's channel is never closed (end closes it after
// Remove), the other calls are not ended, the Notifier is not closed, and
// ps.ending stays above 0; a second Shutdown returns at once. This is the
// close loop that e10e3af fixed in Notifier.closeAll, one layer up.
func TestShutdown_PanickingCancelFuncEndsEverything(t *testing.T) {
	var armed atomic.Bool
	ps, _ := NewWithOptions(nil, WithCancelFunc(panicsWhenArmed(&armed)))
	ks := cidsOf(newBlocks(t, 2)...)
	ch1 := ps.Subscribe(context.Background(), ks[0])
	ch2 := ps.Subscribe(context.Background(), ks[1])
	armed.Store(true)
	require.PanicsWithValue(t, "cancel", ps.Shutdown)
	armed.Store(false)
	ps.Shutdown() // returns at once: the Once is done

	_, closed1 := drainNow(ch1)
	_, closed2 := drainNow(ch2)
	assert.True(t, closed1 && closed2, "the channels of the calls after Shutdown: %v %v", closed1, closed2)
	assert.Zero(t, NotifierOf(ps).Stats(), "the Notifier after Shutdown")
	assert.ErrorIs(t, NotifierOf(ps).Publish(context.Background(), notifier.ResponseMessage{Blocks: newBlocks(t, 1)}), notifier.ErrClosed, "the Notifier is closed")
}

// panicsWhenArmed is a cancel function that panics with "cancel" while armed
// is set.
func panicsWhenArmed(armed *atomic.Bool) func([]cid.Cid) {
	return func([]cid.Cid) {
		if armed.Load() {
			panic("cancel")
		}
	}
}

// requireCompleted fails unless ch, a call's channel, holds blk and is then
// closed.
func requireCompleted(t *testing.T, ch <-chan blocks.Block, blk blocks.Block) {
	t.Helper()
	require.Equal(t, blk, <-ch)
	_, open := <-ch
	require.False(t, open, "the call completed")
}

// Found by review: a panic inside PubSub.Publish (the cancel function, here,
// after the Publish completed the call) skipped its reap. The call it
// completed kept its request in the Notifier until the next PubSub method,
// and, with no next one, for good: a panic must not change what Publish
// leaves behind. The review of that fix found the same in PublishMessage,
// the other Publish of the PubSub.
func TestPublish_PanickingCancelFuncReapsTheCallItCompleted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		publish func(ps *PubSub, blks []blocks.Block)
	}{
		{"Publish", func(ps *PubSub, blks []blocks.Block) { ps.Publish(peer.ID("peer"), blks...) }},
		{"PublishMessage", func(ps *PubSub, blks []blocks.Block) {
			_ = PublishMessage(context.Background(), ps, notifier.ResponseMessage{From: "peer", Blocks: blks})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			ps, _ := NewWithOptions(newStore(), WithNotifierOptions(notifier.WithCancelFunc(panicsWhenArmed(&armed))))
			defer ps.Shutdown()
			blks := newBlocks(t, 1)
			ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)
			armed.Store(true)
			require.PanicsWithValue(t, "cancel", func() { tc.publish(ps, blks) }) // the CANCEL of the key it delivered
			armed.Store(false)
			requireCompleted(t, ch, blks[0])
			require.Equal(t, notifier.Stats{}, NotifierOf(ps).Stats(), "the Notifier after a %s that completed the only call panicked", tc.name)
		})
	}
}

// Found by review of the same fix: a Subscribe that finds in the blockstore
// a block another call waits for completes that call inside the Notifier;
// when the cancel function then panics, Subscribe ended its own call but did
// not reap the one it completed, on the one-key path (Fetch) and on the
// general one.
func TestSubscribe_PanickingCancelFuncReapsTheCallItCompleted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra int // keys besides the shared one: 0 takes fetch (Notifier.Fetch), 1 the general path
	}{{"one key", 0}, {"two keys", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			bs := newStore()
			ps, _ := NewWithOptions(bs, WithNotifierOptions(notifier.WithCancelFunc(panicsWhenArmed(&armed))))
			defer ps.Shutdown()
			n := NotifierOf(ps)
			blks := newBlocks(t, 1+tc.extra)
			waiting := ps.Subscribe(context.Background(), blks[0].Cid())
			require.NoError(t, bs.Put(context.Background(), blks[0])) // stored outside the PubSub
			armed.Store(true)
			require.PanicsWithValue(t, "cancel", func() { _ = ps.Subscribe(context.Background(), cidsOf(blks...)...) })
			armed.Store(false)
			requireCompleted(t, waiting, blks[0])
			if tc.extra > 0 {
				require.False(t, n.Wanted(blks[1].Cid()), "the key the panicking call still wanted")
			}
			require.Equal(t, notifier.Stats{}, n.Stats(), "the Notifier after a Subscribe that completed another call panicked")
		})
	}
}

// Found by review; what went wrong before the fix: deliver recorded a key as
// arrived before it called the block wrapper. A call of two keys whose first
// block's wrapper panicked in a Publish was then closed by the delivery of
// the second block, as if complete: its reader saw the channel closed one
// block short, with neither its context ended nor Shutdown, against
// WithBlockWrapper's doc (the call whose block f was wrapping never gets it;
// its channel stays open until its context ends or Shutdown) and
// Subscribe's (the channel is closed once every key's block came).
func TestPublish_PanickingWrapperDoesNotCompleteTheCall(t *testing.T) {
	blks := newBlocks(t, 2)
	var armed atomic.Bool
	ps := NewPubSub(nil, WithBlockWrapper(func(b blocks.Block, _ peer.ID, _ time.Duration) blocks.Block {
		if armed.Swap(false) {
			panic("wrapper")
		}
		return b
	}))
	defer ps.Shutdown()
	ch := ps.Subscribe(t.Context(), cidsOf(blks...)...)

	armed.Store(true)
	require.PanicsWithValue(t, "wrapper", func() { ps.Publish(peerA, blks[0]) })
	ps.Publish(peerA, blks[1])

	got, closed := drainNow(ch)
	require.Equal(t, cidsOf(blks[1]), cidsOf(got...))
	require.False(t, closed, "the call's channel was closed, with neither its context done nor Shutdown, without the block whose wrapper panicked")
	ps.Shutdown()
	_, closed = drainNow(ch)
	require.True(t, closed, "Shutdown closes the call's channel")
}

// Found by review; what went wrong before the fix: a Subscribe whose
// blockstore check fails hands the error to WithErrorFunc's function and then
// ends the call. If that function panicked, the panic left before the call
// was ended: its request stayed in the Notifier, counted in
// Stats().Subscriptions, until Shutdown.
func TestSubscribe_PanickingErrorFuncLeavesNothing(t *testing.T) {
	blks := newBlocks(t, 2)
	store := memStore()
	ps := NewPubSub(store, WithErrorFunc(func(error) { panic("onErr") }))
	defer ps.Shutdown()
	store.failGet.Store(true)
	require.PanicsWithValue(t, "onErr", func() { _ = ps.Subscribe(t.Context(), cidsOf(blks...)...) })
	require.Equal(t, notifier.Stats{}, NotifierOf(ps).Stats(), "the Notifier after a Subscribe whose error function panicked")
}
