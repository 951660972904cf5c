package bitswapcompat

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	bstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/bitswapsync/notifier"
)

// A Subscribe call enters PubSub.calls only if it outlives its Subscribe
// (track). These tests act at the one point where that matters: after the
// Notifier's Subscribe has committed and before track runs. The Notifier
// reports each Subscribe as an event on the caller's recording span once it
// holds no lock (observe.go), so a span whose AddEvent runs a function acts
// there, on the Subscribe's goroutine.

// hookSpan is a recording span whose AddEvent runs hook, once.
type hookSpan struct {
	noop.Span
	hook func()
}

func (s *hookSpan) IsRecording() bool { return true }

func (s *hookSpan) AddEvent(string, ...trace.EventOption) {
	if h := s.hook; h != nil {
		s.hook = nil
		h()
	}
}

func hooked(hook func()) context.Context {
	return trace.ContextWithSpan(context.Background(), &hookSpan{hook: hook})
}

// A Publish that completes a call while the call's Subscribe is still
// running leaves the removal of its subscription to that Subscribe: once it
// returns, the call's channel holds the block and is closed, and nothing is
// left, in the PubSub or in the Notifier.
func TestTrack_CallCompletedDuringItsSubscribeLeavesNothing(t *testing.T) {
	ps, sim := New(newStore())
	defer ps.Shutdown()
	b := newBlocks(t, 1)[0]
	ch := ps.Subscribe(hooked(func() { ps.Publish("peer", b) }), b.Cid())
	requireReceived(t, ch, true, b)
	requireIdle(t, ps, sim)
}

// A Shutdown that runs after the Notifier's Subscribe has recorded the call's
// want, but before the call is listed, cannot end the call: track must, so
// that the channel is closed once Subscribe returns.
func TestTrack_ShutdownDuringSubscribeClosesTheChannel(t *testing.T) {
	ps, _ := New(newStore())
	b := newBlocks(t, 1)[0]
	ch := ps.Subscribe(hooked(ps.Shutdown), b.Cid())
	requireReceived(t, ch, true)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Empty(t, ps.calls)
}

// A call whose blocks the blockstore had ends inside its Subscribe and takes
// no PubSub.mu: it is never listed, nor queued for reap. The test holds
// PubSub.mu throughout the calls; one that took it would not return.
func TestTrack_CallCompletedInItsSubscribeIsNeverListed(t *testing.T) {
	bs := newStore()
	b := newBlocks(t, 2)
	require.NoError(t, bs.PutMany(context.Background(), b))
	ps, sim := New(bs)
	defer ps.Shutdown()
	chs := make(chan (<-chan blocks.Block), 2)
	ps.mu.Lock()
	go func() {
		chs <- ps.Subscribe(context.Background(), b[0].Cid())
		chs <- ps.Subscribe(context.Background(), cidsOf(b...)...)
	}()
	var got [2]<-chan blocks.Block
	for i := range got {
		select {
		case got[i] = <-chs:
		case <-time.After(10 * time.Second):
			ps.mu.Unlock()
			t.Fatalf("Subscribe %d waits for PubSub.mu", i)
		}
	}
	ps.mu.Unlock()
	requireReceived(t, got[0], true, b[0])
	requireReceived(t, got[1], true, b...)
	requireIdle(t, ps, sim)
}

// A block that the blockstore has goes through the BlockWrapper as any
// other, with no sender and the time since the call began, whether the call
// is of one key (Notifier.Fetch, which makes no call) or of several.
func TestFetch_StoredBlockIsWrapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := newStore()
		b := newBlocks(t, 2)
		require.NoError(t, bs.PutMany(context.Background(), b))
		type seen struct {
			from peer.ID
			at   time.Duration
		}
		var got []seen
		ps := NewPubSub(bs, WithBlockWrapper(func(blk blocks.Block, from peer.ID, d time.Duration) blocks.Block {
			got = append(got, seen{from, d})
			return blocks.NewBlock(append([]byte("wrapped:"), blk.RawData()...))
		}))
		defer ps.Shutdown()
		for _, keys := range [][]cid.Cid{{b[0].Cid()}, {b[0].Cid(), b[0].Cid()}, cidsOf(b...)} {
			got = nil
			blks, closed := drainNow(ps.Subscribe(context.Background(), keys...))
			require.True(t, closed)
			require.Len(t, blks, len(slices.Compact(slices.Clone(keys))))
			for _, blk := range blks {
				require.True(t, strings.HasPrefix(string(blk.RawData()), "wrapped:"), "keys %v", keys)
			}
			require.Len(t, got, len(blks))
			for _, s := range got {
				require.Equal(t, seen{"", 0}, s) // no time passes in the bubble
			}
		}
		requireIdle(t, ps, nil)
	})
}

// getGate parks the Gets of the store it wraps until the test sends on rel.
type getGate struct {
	bstore.Blockstore
	rel chan struct{}
}

func (g *getGate) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	<-g.rel
	return g.Blockstore.Get(ctx, c)
}

// Shutdown while a call of one key is in its Get, which then misses: the
// call has been made (Fetch's newFunc), the Notifier refuses its want, and
// the channel is closed once Subscribe returns, with no error reported (a
// shutdown is not one) and nothing left.
func TestFetch_ShutdownDuringAMiss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := &getGate{Blockstore: newStore(), rel: make(chan struct{})}
		var errs []error
		ps := NewPubSub(bs, WithErrorFunc(func(err error) { errs = append(errs, err) }))
		b := newBlocks(t, 1)[0]
		chs := make(chan (<-chan blocks.Block), 1)
		go func() { chs <- ps.Subscribe(context.Background(), b.Cid()) }()
		synctest.Wait() // in its Get
		shut := make(chan struct{})
		go func() { ps.Shutdown(); close(shut) }()
		synctest.Wait() // Close waits for the Get
		bs.rel <- struct{}{}
		synctest.Wait()
		<-shut
		requireReceived(t, <-chs, true)
		require.Empty(t, errs)
		requireIdle(t, ps, nil)
	})
}

// A call that an operation made directly on the Notifier completes (here a
// native Publish) cannot remove its own request: it is queued, and every
// call of the PubSub that follows removes it, whatever it is given (doc.go,
// MIGRATION.md step 4). A Publish without blocks and a Subscribe without
// keys returned before they removed it (found by review).
func TestTrack_NativelyCompletedCallIsRemovedByAnyNextCall(t *testing.T) {
	ctx := context.Background()
	for _, next := range []struct {
		name string
		call func(ps *PubSub, b blocks.Block)
	}{
		{"Publish", func(ps *PubSub, b blocks.Block) { ps.Publish(peerA, b) }},
		{"Publish/no-blocks", func(ps *PubSub, _ blocks.Block) { ps.Publish(peerA) }},
		{"Subscribe", func(ps *PubSub, b blocks.Block) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			ps.Subscribe(cctx, b.Cid())
		}},
		{"Subscribe/no-keys", func(ps *PubSub, _ blocks.Block) { ps.Subscribe(ctx) }},
		{"PublishMessage", func(ps *PubSub, b blocks.Block) {
			require.NoError(t, PublishMessage(ctx, ps, notifier.ResponseMessage{Haves: []cid.Cid{b.Cid()}}))
		}},
		{"PublishMessage/empty", func(ps *PubSub, _ blocks.Block) {
			require.NoError(t, PublishMessage(ctx, ps, notifier.ResponseMessage{}))
		}},
	} {
		t.Run(next.name, func(t *testing.T) {
			ps, _ := New(nil)
			defer ps.Shutdown()
			b := newBlocks(t, 3)
			ch := ps.Subscribe(ctx, cidsOf(b[:2]...)...)
			require.NoError(t, NotifierOf(ps).Publish(ctx, notifier.ResponseMessage{From: string(peerA), Blocks: b[:2]}))
			got, closed := drainNow(ch)
			require.Len(t, got, 2)
			require.True(t, closed, "the call is complete")
			require.Equal(t, 1, NotifierOf(ps).Stats().Subscriptions, "its request waits for the next call")
			next.call(ps, b[2])
			require.Zero(t, NotifierOf(ps).Stats().Subscriptions, "the next call removed it")
		})
	}
}
