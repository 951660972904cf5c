package notifier

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// oneBlockStore holds one block, which Get returns without allocating.
type oneBlockStore struct {
	Blockstore
	blk blocks.Block
}

func (o oneBlockStore) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	if c != o.blk.Cid() {
		return o.Blockstore.Get(context.Background(), c)
	}
	return o.blk, nil
}

// A Subscribe of one stored key allocates only the message it hands out:
// the keys of a variadic call, s.Subscribe(ctx, k), stay on the caller's
// stack, since the op copies them rather than keeping the caller's slice.
func TestSubscribe_OneStoredKeyAllocatesOnlyTheMessage(t *testing.T) {
	blk := mkBlocks("allocs", 1)[0]
	n, _ := newWithCancels(t, oneBlockStore{Blockstore: memStore(), blk: blk})
	s := mustSub(t, n, 1)
	k := blk.Cid()
	allocs := testing.AllocsPerRun(100, func() {
		if err := s.Subscribe(ctx, k); err != nil {
			t.Fatal(err)
		}
		<-s.Messages()
	})
	if allocs != 1 {
		t.Fatalf("a Subscribe of one stored key made %v allocations, want 1 (the message's block slice)", allocs)
	}
}

// An operation returned to the pool keeps no subscription alive: a
// Subscribe whose blockstore check found a block that another subscription
// wants locks both (lockShared), and if its subscription ended meanwhile it
// unlocks them (unlockShared) and fails. unlockShared cut o.order to length
// 0 without zeroing it, and putOp zeroes only the entries in use, so the
// pooled op kept both subscriptions reachable. Found by review. The steps
// are called directly on one op: the pool may hand out any op.
func TestPutOp_KeepsNoSubscriptionOfAFailedSubscribe(t *testing.T) {
	n := New(memStore(), WithShards(2))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b := blocks.NewBlock([]byte("pooled-op-keeps-nothing"))
	k := b.Cid()
	s2 := mustSub(t, n, 2)
	require.NoError(t, s2.Subscribe(ctx, k)) // s2 wants k: a found k is shared
	s := mustSub(t, n, 1)

	o := n.getOp()
	o.sub = s
	sh := n.shardOf(k)
	e := n.shards[sh].idx.lookup(k)
	require.NotNil(t, e)
	o.hits = append(o.hits, hit{key: k, e: e, shard: sh, kind: kindBlock, blk: b})
	s.Remove() // s ended between its check and its want
	require.Error(t, s.want(o))
	n.putOp(o)
	for _, l := range o.order[:cap(o.order)] {
		if l.s != nil {
			t.Fatalf("the pooled op still points to subscription %d", l.s.ID())
		}
	}
}
