package notifier

import (
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	"github.com/stretchr/testify/require"
)

// The tests of this file pin mechanisms that a mutation of .ci/mutants
// broke with no test failing (or only a stress test, now and then). Each
// names its mutation.

// G1: a one-key Subscribe of a key that a Publish has reserved for its
// PutMany waits for that Publish, and gets the block. peek must see the
// reservation (shard.go: "Check at peek only that nobody wants the key, not
// that nobody reserves it"); ignoring it, the Subscribe's Get missed, its
// want was recorded after the Publish had planned, and the stored block
// never came (g1-peek-ignores-reservation, which only
// TestLocalPublishRacingSubscribe_AlwaysDelivers caught, in some runs).
func TestSubscribeOne_WaitsForAPublishInItsPutMany(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(0, 1)
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("one-put", 1)[0]
		s := mustSub(t, n, 1)
		sub, pub := make(chan error, 1), make(chan error, 1)
		go func() { pub <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
		synctest.Wait()
		go func() { sub <- s.Subscribe(ctx, b.Cid()) }()
		synctest.Wait()
		require.False(t, returned(sub), "the Subscribe must wait for the Publish that reserves its key")
		ps.putRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-pub)
		require.NoError(t, <-sub)
		require.Equal(t, ResponseMessage{Blocks: []blocks.Block{b}}, recv(t, s))
		require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
		require.Empty(t, cancels.take())
	})
}

// G9: a nil block is refused wherever it stands in the message, first
// included (g9-nil-block-late: TestBadInput_RefusedWhole puts it second only).
func TestBadInput_NilBlockFirstIsRefused(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("nil-first", 1)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	for _, blks := range [][]blocks.Block{{nil}, {nil, b[0]}} {
		require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: blks}), ErrNilBlock)
	}
	none(t, s)
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
}

// G7 and G9: Remove stays idempotent once its session ID is reused: a second
// Remove of the old subscription leaves the new one registered, so the ID
// is still refused to a third (g7-old-remove-unregisters-new: unregister
// deleting the ID's entry whoever holds it).
func TestRemove_AgainAfterItsIDIsReusedLeavesTheNewOne(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	old := mustSub(t, n, 7)
	old.Remove()
	s := mustSub(t, n, 7)
	old.Remove()
	_, err := n.NewSubscription(7)
	require.ErrorIs(t, err, ErrDuplicateSession)
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
	s.Remove()
	require.Equal(t, Stats{}, n.Stats())
}
