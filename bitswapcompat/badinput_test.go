package bitswapcompat

import (
	"context"
	"fmt"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
)

// undefinedBlock is a block whose CID is undefined, which no peer can send.
func undefinedBlock(t testing.TB) blocks.Block {
	b, err := blocks.NewBlockWithCid([]byte("no CID"), cid.Undef)
	require.NoError(t, err)
	return b
}

// A nil block (boxo's Publish panics on it too) or a block with an undefined
// CID in Publish is a programming error: it panics with a "bitswapcompat: "
// message, and the Publish neither stores nor delivers any of its blocks.
func TestPubSub_BadBlocksPanic(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		blk := newBlocks(t, 1)[0]
		ch := ps.Subscribe(t.Context(), blk.Cid())
		for _, blks := range [][]blocks.Block{{nil}, {blk, nil}, {undefinedBlock(t)}, {blk, undefinedBlock(t)}} {
			for _, from := range []peer.ID{peerA, ""} {
				requirePanicsWithPrefix(t, "bitswapcompat: ", func() { ps.Publish(from, blks...) })
			}
		}
		requireReceived(t, ch, false)
		ps.Publish(peerA) // no blocks: nothing to do
		ps.Publish(peerA, blk)
		requireReceived(t, ch, true, blk)
		requireIdle(t, ps, nil)
	})
}

// A panicking Publish stores nothing, not even its local blocks.
func TestPubSub_BadBlocksPanicBeforeStoring(t *testing.T) {
	store := newStore()
	ps := NewPubSub(store)
	defer ps.Shutdown()
	blk := newBlocks(t, 1)[0]
	requirePanicsWithPrefix(t, "bitswapcompat: ", func() { ps.Publish("", blk, nil) })
	has, err := store.Has(t.Context(), blk.Cid())
	require.NoError(t, err)
	require.False(t, has)
}

// SplitWantedUnwanted panics on a nil block (as boxo's does) or an undefined
// CID.
func TestSIM_BadBlocksPanic(t *testing.T) {
	eachWiring(t, func(t *testing.T, w *wiring) {
		b := newBlocks(t, 2)
		k := cidsOf(b...)
		w.sim.RecordSessionInterest(1, k[:1])
		for _, blks := range [][]blocks.Block{{nil}, {b[0], nil}, {undefinedBlock(t)}, {b[1], undefinedBlock(t)}} {
			requirePanicsWithPrefix(t, "bitswapcompat: ", func() { w.sim.SplitWantedUnwanted(blks) })
		}
		require.Equal(t, k[:1], w.removeSession(t, 1))
		w.requireIdle(t)
	})
}

// An undefined CID in RecordSessionInterest is reported to WithErrorFunc's
// function and not recorded; the call records the other keys and does not
// panic (boxo's session calls it on its own goroutine with the keys of a
// GetBlocks: a panic there would stop the node). Every other method takes the
// undefined CID as a key no session is interested in.
func TestSIM_UndefinedKeyIsReportedNotRecorded(t *testing.T) {
	for _, cancels := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancelFunc=%v", cancels), func(t *testing.T) {
			var errs []error
			opts := []Option{WithErrorFunc(func(err error) { errs = append(errs, err) })}
			var log cancelLog
			if cancels {
				opts = append(opts, WithCancelFunc(log.add))
			}
			ps, sim := NewWithOptions(memStore(), opts...)
			defer ps.Shutdown()
			b := newBlocks(t, 2)
			k := cidsOf(b...)

			ks := []cid.Cid{k[1], cid.Undef, k[0], cid.Undef}
			require.NotPanics(t, func() { sim.RecordSessionInterest(^uint64(0), ks) })
			require.Equal(t, []cid.Cid{k[1], cid.Undef, k[0], cid.Undef}, ks, "the caller's slice is left as it was")
			require.Len(t, errs, 1)
			require.ErrorIs(t, errs[0], notifier.ErrInvalidCid)
			require.EqualError(t, errs[0], "bitswapcompat: RecordSessionInterest(18446744073709551615): ks[1]: notifier: undefined CID")
			require.NotPanics(t, func() { sim.RecordSessionInterest(2, []cid.Cid{cid.Undef}) })
			require.Len(t, errs, 2)
			require.Equal(t, 1, sim.n.Stats().Subscriptions, "no session made for keys that are all undefined")

			require.Equal(t, [][]cid.Cid{{k[1], k[0]}, nil}, sim.FilterSessionInterested(^uint64(0), ks, []cid.Cid{cid.Undef}))
			require.Equal(t, []uint64{^uint64(0)}, sim.InterestedSessions(ks))
			require.Empty(t, sim.InterestedSessions([]cid.Cid{cid.Undef}))
			wanted, unwanted := sim.SplitWantedUnwanted(b)
			require.Equal(t, b, wanted)
			require.Empty(t, unwanted)

			require.Empty(t, sim.RemoveSessionWants(^uint64(0), []cid.Cid{cid.Undef}), "nothing to cancel")
			require.Empty(t, log.since(0))
			free := sim.RemoveSession(^uint64(0))
			if cancels {
				require.Nil(t, free)
				free = log.since(0)
			}
			require.ElementsMatch(t, k, free, "the recorded keys, to CANCEL")
			require.Len(t, errs, 2, "nothing else reported")
			require.Zero(t, sim.n.Stats().Subscriptions)
		})
	}
}

// As boxo's: a call whose keys are all undefined waits for ctx (or Shutdown),
// since those blocks never come; with defined keys among them, their blocks
// arrive and the channel still waits for ctx.
func TestPubSub_UndefinedKeyWaitsForContext(t *testing.T) {
	eachPubSub(t, memStore, func(t *testing.T, ps *PubSub) {
		b := newBlocks(t, 2)
		ctx1, cancel1 := context.WithCancel(t.Context())
		only := ps.Subscribe(ctx1, cid.Undef)
		only2 := ps.Subscribe(ctx1, cid.Undef, cid.Undef)
		ctx2, cancel2 := context.WithCancel(t.Context())
		mixed := ps.Subscribe(ctx2, b[0].Cid(), cid.Undef, b[1].Cid())
		ps.Publish(peerA, b...)
		requireReceived(t, only, false)
		requireReceived(t, only2, false)
		requireReceived(t, mixed, false, b...)
		ps.Publish(peerB, b...) // each key once
		requireReceived(t, mixed, false)

		cancel1()
		for range only {
		}
		for range only2 {
		}
		requireReceived(t, mixed, false)
		cancel2()
		for range mixed {
		}
		requireIdle(t, ps, nil)

		waiting := []<-chan blocks.Block{
			ps.Subscribe(context.Background(), cid.Undef),
			ps.Subscribe(context.Background(), b[0].Cid(), cid.Undef),
		}
		ps.Publish(peerA, b[0])
		for _, ch := range waiting {
			_, closed := drainNow(ch)
			require.False(t, closed)
		}
		ps.Shutdown()
		for _, ch := range waiting {
			_, closed := drainNow(ch)
			require.True(t, closed, "closed by Shutdown")
		}
	})
}
