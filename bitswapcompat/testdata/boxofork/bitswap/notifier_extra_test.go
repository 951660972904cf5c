package bitswap_test

// Tests of this module's drop-in layer through boxo's real client, which
// .ci/boxo-suite adds to boxo's bitswap package in every wiring, own
// included. They use boxo's exported test helpers only, not those of boxo's
// own test files, so that they build against any boxo the suite tests.

import (
	"bytes"
	"context"
	"testing"
	"time"

	testinstance "github.com/ipfs/boxo/bitswap/testinstance"
	tn "github.com/ipfs/boxo/bitswap/testnet"
	mockrouting "github.com/ipfs/boxo/routing/mock"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	delay "github.com/ipfs/go-ipfs-delay"
)

// notifierExtraAdd stores blk at inst and announces it, as boxo's tests do.
func notifierExtraAdd(t *testing.T, inst testinstance.Instance, blk blocks.Block) {
	t.Helper()
	if err := inst.Blockstore.Put(context.Background(), blk); err != nil {
		t.Fatal(err)
	}
	if err := inst.Exchange.NotifyNewBlocks(context.Background(), blk); err != nil {
		t.Fatal(err)
	}
}

// A GetBlocks whose keys include cid.Undef gets its other blocks, and the
// node goes on working: the session records its interest on its own
// goroutine, where bitswapcompat's RecordSessionInterest once panicked on
// the undefined CID and stopped the process (boxo's own layer records it).
func TestNotifierExtra_GetBlocksWithAnUndefinedKey(t *testing.T) {
	ig := testinstance.NewTestInstanceGenerator(tn.VirtualNetwork(delay.Fixed(0)), mockrouting.NewServer(), nil, nil)
	defer ig.Close()
	peers := ig.Instances(2)
	has, wants := peers[0], peers[1]
	defer has.Exchange.Close()
	defer wants.Exchange.Close()
	blk := blocks.NewBlock([]byte("notifier extra: a block beside an undefined CID"))
	notifierExtraAdd(t, has, blk)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := wants.Exchange.GetBlocks(ctx, []cid.Cid{cid.Undef, blk.Cid()})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if !bytes.Equal(got.RawData(), blk.RawData()) {
			t.Fatalf("got block %s, want %s", got.Cid(), blk.Cid())
		}
	case <-ctx.Done():
		t.Fatal("the defined key's block never came")
	}
	cancel()
	for range ch { // the undefined key's block never comes: the channel closes with ctx
	}

	next := blocks.NewBlock([]byte("notifier extra: the node still serves"))
	notifierExtraAdd(t, has, next)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, err := wants.Exchange.GetBlock(ctx2, next.Cid()); err != nil {
		t.Fatal(err)
	}
}
