package notifier

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
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
