package notifier

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// Found by review; what went wrong before the fix: Fetch takes its general path when k is not alone (a channel
// subscription wants it) and the blockstore has the block. The request it
// made gets the block through its delivery function, in route. If that
// function panics, the panic leaves Fetch before it returns the request: the
// caller cannot Remove it, yet it stays listed in the registry (it recorded a
// want, so enlist listed it) and counted in Stats until Close. On an error
// Fetch removes the request itself; on a panic it leaks it.
func TestFetch_PanickingDeliveryFunctionRemovesTheRequest(t *testing.T) {
	ctx := context.Background()
	bs := memStore()
	n := New(bs, WithShards(1))
	blk := blocks.NewBlock([]byte("review3 fetch"))
	other := mustSub(t, n, 1)
	require.NoError(t, other.Subscribe(ctx, blk.Cid()))      // not alone: the general path
	require.NoError(t, bs.PutMany(ctx, []blocks.Block{blk})) // behind the Notifier's back
	require.Equal(t, 1, n.Stats().Subscriptions)

	require.PanicsWithValue(t, "fetch", func() {
		_, _, _ = n.Fetch(ctx, blk.Cid(), func() func(ResponseMessage) {
			return func(ResponseMessage) { panic("fetch") }
		})
	})
	requireNothingHeld(t, n, other)
	require.Equal(t, []blocks.Block{blk}, recv(t, other).Blocks, "the other target")
	other.Remove()
	require.Equal(t, Stats{}, n.Stats(), "a request that the caller of the panicking Fetch never got stays counted")
	n.mu.Lock()
	leaked := len(n.requests)
	n.mu.Unlock()
	require.Zero(t, leaked, "requests left in the registry")
	requireCloses(t, n)
}

// Found by review; what went wrong before the fix: the one-key Subscribe that finds its block and overflows its own
// subscription past WithMaxPending ends it in endOne (s.close) and only then
// reports it (closedSlow) and ends its probe (p.end). If the cancel function
// panics in that close, which reports the subscription's other wants, the
// panic skips both: the slow consumer is neither logged nor counted in
// slow_consumers_total, and the Subscribe is missing from subscribe_seconds.
// On the general path the same end is counted, by finish's handedOver after
// unwind, and the probe ends in a deferred call.
func TestSubscribe_OneKeyOverflowWithPanickingCancelCountsTheSlowConsumer(t *testing.T) {
	reg := promtest.Registry(t)
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		bs := memStore()
		var armed atomic.Bool
		n := New(bs, WithMetrics(kuboScope()), WithShards(1), WithBufferSize(1), WithMaxPending(1),
			WithCancelFunc(func([]cid.Cid) {
				if armed.Load() {
					panic("cancel")
				}
			}))
		kw := blocks.NewBlock([]byte("review3 wanted")).Cid()
		found := blocks.NewBlock([]byte("review3 found"))
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kw))
		for range 3 { // out's buffer, the message drain holds, the backlog (1)
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kw}}))
			synctest.Wait() // drain, if started, has taken its message and waits for out
		}
		require.NoError(t, bs.PutMany(ctx, []blocks.Block{found}))
		armed.Store(true)
		require.PanicsWithValue(t, "cancel", func() { _ = s.Subscribe(ctx, found.Cid()) }) // overflows s
		armed.Store(false)
		require.ErrorIs(t, s.Err(), ErrSlowConsumer)
		requireNothingHeld(t, n, s)
		require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(
			exposition("counter", promPrefix+"slow_consumers_total", "Subscriptions ended as slow consumers (past WithMaxPending).", 1)),
			promPrefix+"slow_consumers_total"))
		requireCloses(t, n)
	})
}

// Publish's doc: a nil pointer of a concrete block type is not detected as
// ErrNilBlock; its Cid method panics before anything changes, so the other
// block of the message is not delivered, its want stays, and the Notifier
// works on.
func TestPublish_TypedNilBlockPanicsBeforeAnythingChanges(t *testing.T) {
	n := New(memStore())
	s := mustSub(t, n, 1)
	b := mkBlocks("typed nil", 1)[0]
	require.NoError(t, s.Subscribe(ctx, b.Cid()))
	require.Panics(t, func() {
		_ = n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b, (*blocks.BasicBlock)(nil)}})
	})
	require.True(t, n.Wanted(b.Cid()), "the panicking Publish changed nothing")
	require.Empty(t, s.Messages())
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
	require.False(t, n.Wanted(b.Cid()))
	require.Len(t, s.Messages(), 1)
	require.NoError(t, n.Close())
	require.Equal(t, Stats{}, n.Stats())
}
