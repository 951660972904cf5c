package bitswapcompat

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/boxo/blockservice"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier"
)

// took returns how long f took, on the bubble's clock in a synctest.
func took(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// A local Publish (the zero peer ID) is never held by the pacing: it is not
// a peer's copy. boxo's block service publishes every block it has fetched
// once more, through the exchange's NotifyNewBlocks, right after the network's
// Publish has handed it to the request; before this, that second Publish,
// which hands nothing, slept out the window, once per fetched block. A local
// Publish that hands a block still starts the window for the peers' copies.
// Found by review, with the block-service walk below.
func TestPubSub_LocalPublishIsNotPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := NewPubSub(nil)
		defer ps.Shutdown()
		blks := newBlocks(t, 2)
		ch := ps.Subscribe(t.Context(), blks[0].Cid())
		require.Zero(t, took(func() { ps.Publish(peerA, blks[0]) }))
		requireReceived(t, ch, true, blks[0])
		require.Zero(t, took(func() { ps.Publish("", blks[0]) }), "a local Publish of a block just handed slept (NotifyNewBlocks after a fetch)")
		require.Zero(t, took(func() { ps.Publish("", blks[1]) }), "a local Publish of a block nobody wants slept (AddBlock)")

		// A local Publish that hands a block starts the window: a peer's
		// copy of it is held for the whole window.
		time.Sleep(2 * paceWindow)
		ch = ps.Subscribe(t.Context(), blks[1].Cid())
		require.Zero(t, took(func() { ps.Publish("", blks[1]) }))
		requireReceived(t, ch, true, blks[1])
		require.Equal(t, paceWindow, took(func() { ps.Publish(peerA, blks[1]) }), "a peer's copy of a block handed locally was not paced")
	})
}

// A DAG walked one block at a time through boxo's own block service
// (blockservice.GetBlock: the blockstore, the exchange's GetBlock, Put, then
// the exchange's NotifyNewBlocks), over an exchange wired to the layer as
// boxo's client is (walkExchange), the peer answering at once: no block's
// NotifyNewBlocks may sleep, so the walk takes no time on the bubble's clock.
// Before the fix it took 40 windows.
func TestPubSub_BlockServiceWalkIsNotPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps, sim := New(nil)
		defer ps.Shutdown()
		const n = 40
		blks := newBlocks(t, n)
		ex := &walkExchange{ps: ps, sim: sim, have: make(map[cid.Cid]blocks.Block, n)}
		for _, b := range blks {
			ex.have[b.Cid()] = b
		}
		bsvc := blockservice.New(newStore(), ex)
		start := time.Now()
		for _, b := range blks {
			got, err := bsvc.GetBlock(t.Context(), b.Cid())
			require.NoError(t, err)
			require.Equal(t, b.Cid(), got.Cid())
		}
		require.Zero(t, time.Since(start), "a walk of %d blocks through the block service slept", n)
		require.Equal(t, n, ex.notified, "the block service did not notify every fetched block")
	})
}

// pacedPubSub returns a PubSub (no blockstore) whose pacing window has just
// begun, a Publish having handed blks[0] to a call, and two blocks; the
// caller shuts it down. Run it in a synctest bubble.
func pacedPubSub(t *testing.T) (*PubSub, []blocks.Block) {
	t.Helper()
	ps := NewPubSub(nil)
	blks := newBlocks(t, 2)
	ch := ps.Subscribe(t.Context(), blks[0].Cid())
	ps.Publish(peerA, blks[0]) // hands a block: the window begins
	requireReceived(t, ch, true, blks[0])
	return ps, blks
}

// walkExchange is the part of boxo's bitswap client that the block service
// drives, in the order of boxo v0.42.0's client: GetBlocks subscribes,
// records the session's interest and asks the network, whose answer goes
// through receiveBlocksFrom (SplitWantedUnwanted, the session's
// RemoveSessionWants, Publish from the peer); NotifyNewBlocks is
// Client.NotifyNewBlocks (the sessions, then a Publish from the zero ID).
type walkExchange struct {
	ps       *PubSub
	sim      *SessionInterestManager
	have     map[cid.Cid]blocks.Block // what the remote peer holds
	notified int
}

const walkSession = 1

func (e *walkExchange) GetBlock(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	ch, err := e.GetBlocks(ctx, []cid.Cid{k})
	if err != nil {
		return nil, err
	}
	b, ok := <-ch
	if !ok {
		return nil, context.Cause(ctx)
	}
	return b, nil
}

func (e *walkExchange) GetBlocks(ctx context.Context, ks []cid.Cid) (<-chan blocks.Block, error) {
	ch := e.ps.Subscribe(ctx, ks...)
	e.sim.RecordSessionInterest(walkSession, ks)
	for _, k := range ks {
		wanted, _ := e.sim.SplitWantedUnwanted([]blocks.Block{e.have[k]})
		e.sim.RemoveSessionWants(walkSession, cidsOf(wanted...))
		e.ps.Publish(peerA, wanted...)
	}
	return ch, nil
}

func (e *walkExchange) NotifyNewBlocks(_ context.Context, blks ...blocks.Block) error {
	e.notified += len(blks)
	e.sim.RemoveSessionWants(walkSession, cidsOf(blks...))
	e.ps.Publish("", blks...)
	return nil
}

func (e *walkExchange) Close() error { return nil }

// PublishMessage paces only a message it published: one refused after
// Shutdown, or for a nil block, handed nothing and is no peer's copy, as
// Publish after Shutdown (TestPubSub_PublishAfterShutdownIsNotPaced). Found
// by review.
func TestPublishMessage_RefusedMessageIsNotPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps, blks := pacedPubSub(t)

		start := time.Now()
		err := PublishMessage(t.Context(), ps, notifier.ResponseMessage{From: string(peerB), Blocks: []blocks.Block{blks[1], nil}})
		require.ErrorIs(t, err, notifier.ErrNilBlock)
		require.Zero(t, time.Since(start), "a PublishMessage refused for a nil block slept")

		ps.Shutdown()
		err = PublishMessage(t.Context(), ps, notifier.ResponseMessage{From: string(peerB), Blocks: blks[1:]})
		require.ErrorIs(t, err, notifier.ErrClosed)
		require.Zero(t, time.Since(start), "a PublishMessage after Shutdown slept")
	})
}

// MIGRATION.md's cost of publishing every received block (its optional edit,
// or PublishMessage with all of them): the pacing cannot tell a copy from a
// block that nobody wants, so a peer's message of unwanted blocks right after
// a delivery is held for the window, where boxo's form, which publishes only
// the wanted blocks, publishes no block for it and returns at once. Pinned so
// that the docs change with it.
func TestPubSub_UnwantedBlocksAfterADeliveryArePaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps, _ := New(nil)
		defer ps.Shutdown()
		blks := newBlocks(t, 2)
		ch := ps.Subscribe(t.Context(), blks[0].Cid())
		ps.Publish(peerA, blks[0])
		requireReceived(t, ch, true, blks[0])
		require.Zero(t, took(func() { ps.Publish(peerB) }), "boxo's form: no wanted block")

		time.Sleep(2 * paceWindow)
		ch = ps.Subscribe(t.Context(), blks[0].Cid())
		ps.Publish(peerA, blks[0])
		requireReceived(t, ch, true, blks[0])
		require.Equal(t, paceWindow, took(func() { ps.Publish(peerB, blks[1]) }), "every block published: the unwanted one is held as a copy")
	})
}
