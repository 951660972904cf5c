package legacy

import (
	"context"
	"fmt"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func requireInterest(t *testing.T, c *Client, keys, pairs int) {
	t.Helper()
	k, p := c.InterestSize()
	require.Equal(t, keys, k, "keys")
	require.Equal(t, pairs, p, "pairs")
}

func TestSession_GetsBlocksItAskedFor(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	bs := newStore()
	c := NewClient(bs)
	defer c.Close()
	s := c.NewSession(1)
	b1, b2 := mkBlock("one"), mkBlock("two")

	out, err := s.GetBlocks(ctx, b1.Cid(), b2.Cid())
	require.NoError(t, err)
	requireInterest(t, c, 2, 2)
	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{b1, b2}, nil, nil))

	assert.ElementsMatch(t, []blocks.Block{b1, b2}, drain(t, out))
	u := recv(t, s.Updates())
	assert.Equal(t, "peerA", u.From)
	assert.ElementsMatch(t, keysOf(b1, b2), u.Blocks)
	// The session goroutine ends the wants before it passes the Update on.
	requireInterest(t, c, 0, 0)
	has, err := bs.Has(ctx, b1.Cid())
	require.NoError(t, err)
	assert.True(t, has)
}

func TestSession_GetBlocksFindsStoredBlocksFirst(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	bs := newStore()
	c := NewClient(bs)
	defer c.Close()
	s := c.NewSession(1)
	stored, missing := mkBlock("stored"), mkBlock("missing")
	require.NoError(t, bs.Put(ctx, stored))

	out, err := s.GetBlocks(ctx, stored.Cid(), missing.Cid())
	require.NoError(t, err)

	assert.Equal(t, stored, recv(t, out))
	requireInterest(t, c, 1, 1)
	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{missing}, nil, nil))
	assert.Equal(t, []blocks.Block{missing}, drain(t, out))
}

func TestClient_HavesAndDontHavesReachInterestedSessionsOnly(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	c := NewClient(newStore())
	defer c.Close()
	k := keysOf(mkBlock("a"), mkBlock("b"), mkBlock("c"), mkBlock("nobody"))
	ss := make([]*Session, 3)
	for i := range ss {
		ss[i] = c.NewSession(uint64(i + 1))
		_, err := ss[i].GetBlocks(ctx, k[i])
		require.NoError(t, err)
	}
	haves, dontHaves := []cid.Cid{k[0], k[3]}, []cid.Cid{k[1]}

	require.NoError(t, c.ReceiveMessage(ctx, "p1", nil, haves, dontHaves))
	require.NoError(t, c.ReceiveMessage(ctx, "p2", nil, nil, k))

	assert.Equal(t, Update{From: "p1", Haves: k[:1]}, recv(t, ss[0].Updates()))
	assert.Equal(t, Update{From: "p1", DontHaves: k[1:2]}, recv(t, ss[1].Updates()))
	// Each session's next Update is p2's: p1's message did not reach session 3,
	// and sessions 1 and 2 got no more of it.
	for i, s := range ss {
		assert.Equal(t, Update{From: "p2", DontHaves: k[i : i+1]}, recv(t, s.Updates()))
	}
	assert.Equal(t, []cid.Cid{k[0], k[3]}, haves, "ReceiveMessage must not modify its arguments")
}

func TestClient_UnwantedRemoteBlocksAreNotStored(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	bs := newStore()
	c := NewClient(bs)
	defer c.Close()
	s := c.NewSession(1)
	wanted, unwanted := mkBlock("wanted"), mkBlock("unwanted")
	out, err := s.GetBlocks(ctx, wanted.Cid())
	require.NoError(t, err)

	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{unwanted, wanted}, nil, nil))

	assert.Equal(t, []blocks.Block{wanted}, drain(t, out))
	assert.Equal(t, Update{From: "peerA", Blocks: keysOf(wanted)}, recv(t, s.Updates()))
	has, err := bs.Has(ctx, unwanted.Cid())
	require.NoError(t, err)
	assert.False(t, has)
}

func TestClient_LocalBlocksAreStoredAndDelivered(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	bs := newStore()
	c := NewClient(bs)
	defer c.Close()
	s := c.NewSession(1)
	unasked, asked := mkBlock("unasked"), mkBlock("asked")
	out, err := s.GetBlocks(ctx, asked.Cid())
	require.NoError(t, err)

	require.NoError(t, c.ReceiveMessage(ctx, "", []blocks.Block{unasked, asked}, nil, nil))

	assert.Equal(t, []blocks.Block{asked}, drain(t, out))
	assert.Equal(t, Update{Blocks: keysOf(asked)}, recv(t, s.Updates()))
	for _, b := range []blocks.Block{unasked, asked} {
		has, err := bs.Has(ctx, b.Cid())
		require.NoError(t, err)
		assert.True(t, has, "local blocks are always stored")
	}
}

func TestClient_PutManyErrorDeliversNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	c := NewClient(failStore{newStore()})
	defer c.Close()
	s := c.NewSession(1)
	b := mkBlock("b")
	out, err := s.GetBlocks(ctx, b.Cid())
	require.NoError(t, err)

	err = c.ReceiveMessage(ctx, "peerA", []blocks.Block{b}, nil, nil)
	require.ErrorIs(t, err, errBoom)
	require.NoError(t, c.ReceiveMessage(ctx, "peerB", nil, keysOf(b), nil))

	assert.Equal(t, Update{From: "peerB", Haves: keysOf(b)}, recv(t, s.Updates()))
	assert.Empty(t, out)
	requireInterest(t, c, 1, 1)
}

func TestClient_NotifyOnlyChecksAndStoresNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	c := NewClient(nil)
	defer c.Close()
	s := c.NewSession(1)
	b := mkBlock("b")

	out, err := s.GetBlocks(ctx, b.Cid())
	require.NoError(t, err)
	requireInterest(t, c, 1, 1)
	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{b}, nil, nil))

	assert.Equal(t, []blocks.Block{b}, drain(t, out))
}

func TestSession_CancelWantsReturnsKeysNobodyWants(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	log := newCancelLog()
	c := NewClient(newStore(), log.option())
	defer c.Close()
	k := keysOf(mkBlock("shared"), mkBlock("own"))
	a, b := c.NewSession(1), c.NewSession(2)
	_, err := a.GetBlocks(ctx, k...)
	require.NoError(t, err)
	_, err = b.GetBlocks(ctx, k[0])
	require.NoError(t, err)

	assert.Equal(t, k[1:], a.CancelWants(k...))
	assert.Equal(t, k[1:], recv(t, log.ch))
	assert.Empty(t, b.CancelWants(k[1]), "b never wanted it")
	assert.Equal(t, k[:1], b.CancelWants(k[0]))
	assert.Equal(t, k[:1], recv(t, log.ch))
	requireInterest(t, c, 0, 0)
}

func TestSession_CloseReturnsKeysNobodyWants(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	log := newCancelLog()
	c := NewClient(newStore(), log.option())
	defer c.Close()
	k := keysOf(mkBlock("own"), mkBlock("shared"))
	a, b := c.NewSession(1), c.NewSession(2)
	outA, err := a.GetBlocks(ctx, k...)
	require.NoError(t, err)
	_, err = b.GetBlocks(ctx, k[1])
	require.NoError(t, err)

	assert.Equal(t, k[:1], a.Close())
	assert.Equal(t, k[:1], recv(t, log.ch))
	assert.Nil(t, a.Close())
	assert.Empty(t, drain(t, outA))
	assert.Empty(t, drain(t, a.Updates()))
	_, err = a.GetBlocks(ctx, k[0])
	require.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, k[1:], b.Close())
	requireInterest(t, c, 0, 0)
}

func TestSession_ReceivedBlockEndsWantsAndIsCancelledOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	log := newCancelLog()
	c := NewClient(newStore(), log.option())
	defer c.Close()
	blk := mkBlock("b")
	a, b := c.NewSession(1), c.NewSession(2)
	for _, s := range []*Session{a, b} {
		_, err := s.GetBlocks(ctx, blk.Cid())
		require.NoError(t, err)
	}

	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{blk}, nil, nil))
	recv(t, a.Updates())
	recv(t, b.Updates())

	assert.Equal(t, keysOf(blk), recv(t, log.ch))
	assert.Empty(t, log.ch, "the key is cancelled once, by the last session")
	requireInterest(t, c, 0, 0)
}

func TestSession_ContextDoneEndsRemainingWants(t *testing.T) {
	defer goleak.VerifyNone(t)
	log := newCancelLog()
	c := NewClient(newStore(), log.option())
	defer c.Close()
	s := c.NewSession(1)
	got, lost := mkBlock("got"), mkBlock("lost")
	ctx, cancel := context.WithCancel(context.Background())
	out, err := s.GetBlocks(ctx, got.Cid(), lost.Cid())
	require.NoError(t, err)

	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{got}, nil, nil))
	assert.Equal(t, got, recv(t, out))
	cancel()

	assert.Empty(t, drain(t, out))
	// Both go through the session's queue, in order: the receipt, then the
	// cancel that handleIncoming enqueued after ctx was done.
	assert.Equal(t, keysOf(got), recv(t, log.ch))
	assert.Equal(t, keysOf(lost), recv(t, log.ch))
	requireInterest(t, c, 0, 0)
}

// The race the notifier removes: a block stored after GetBlocks' blockstore
// check and before its Subscribe is never delivered.
func TestSession_LostWakeupIsReproduced(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	early, late := mkBlock("early"), mkBlock("late")
	var c *Client
	c = NewClient(hookStore{Blockstore: newStore(), afterGet: func(k cid.Cid) {
		if k == early.Cid() {
			require.NoError(t, c.ReceiveMessage(ctx, "", []blocks.Block{early}, nil, nil))
		}
	}})
	defer c.Close()
	s := c.NewSession(1)

	out, err := s.GetBlocks(ctx, early.Cid(), late.Cid())
	require.NoError(t, err)
	require.NoError(t, c.ReceiveMessage(ctx, "", []blocks.Block{late}, nil, nil))

	assert.Equal(t, late, recv(t, out))
	assert.Equal(t, Update{Blocks: keysOf(late)}, recv(t, s.Updates()))
	assert.Empty(t, out, "the early block was published before the subscription")
	requireInterest(t, c, 1, 1) // early is still wanted, and never arrives
}

func TestClient_CloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	c := NewClient(newStore())
	var outs []<-chan blocks.Block
	for i := range 4 {
		s := c.NewSession(uint64(i))
		out, err := s.GetBlocks(ctx, mkBlock(fmt.Sprint("pending", i)).Cid())
		require.NoError(t, err)
		outs = append(outs, out)
	}
	require.NoError(t, c.ReceiveMessage(ctx, "", []blocks.Block{mkBlock("pending0")}, nil, nil))
	recv(t, outs[0])

	c.Close()
	c.Close()

	for _, out := range outs {
		assert.Empty(t, drain(t, out))
	}
	late := c.NewSession(99)
	assert.Empty(t, drain(t, late.Updates()))
	_, err := late.GetBlocks(ctx, mkBlock("x").Cid())
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, c.ReceiveMessage(ctx, "", []blocks.Block{mkBlock("x")}, nil, nil))
	requireInterest(t, c, 0, 0)
}

func TestClient_DuplicateSessionIDPanics(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := NewClient(nil)
	defer c.Close()
	s := c.NewSession(7)

	assert.Panics(t, func() { c.NewSession(7) })
	s.Close()
	assert.NotPanics(t, func() { c.NewSession(7) }, "an ID is free again after Close")
}

// Requests that subscribe before their block is received always get it; the
// rest runs concurrently under -race.
func TestClient_ConcurrentUse(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	c := NewClient(newStore())
	defer c.Close()
	const workers, rounds = 8, 50
	var drains, wg sync.WaitGroup
	for w := range workers {
		s := c.NewSession(uint64(w))
		drainUpdates(s, &drains)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				b := mkBlock(fmt.Sprintf("%d/%d", w, r))
				out, err := s.GetBlocks(ctx, b.Cid())
				assert.NoError(t, err)
				assert.NoError(t, c.ReceiveMessage(ctx, "peer", []blocks.Block{b}, keysOf(b), keysOf(b)))
				assert.Equal(t, b, <-out)
				s.CancelWants(mkBlock(fmt.Sprint("other", r)).Cid())
			}
			s.Close()
		}()
	}
	wg.Wait()
	drains.Wait()
	requireInterest(t, c, 0, 0)
}
