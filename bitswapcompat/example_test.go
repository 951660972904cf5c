package bitswapcompat_test

import (
	"context"
	"fmt"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/bitswapsync/notifier/bitswapcompat"
)

// A request subscribes, its session records its interest, a peer's block
// arrives and the client publishes the wanted part; the session then lets go
// of the key and gets it back to CANCEL.
func Example() {
	ps, sim := bitswapcompat.New(nil) // notify only: the client stores blocks elsewhere
	defer ps.Shutdown()

	blk := blocks.NewBlock([]byte("hello"))
	const session = 1
	ch := ps.Subscribe(context.Background(), blk.Cid())
	sim.RecordSessionInterest(session, []cid.Cid{blk.Cid()})

	wanted, _ := sim.SplitWantedUnwanted([]blocks.Block{blk})
	ps.Publish(peer.ID("remote"), wanted...)
	for b := range ch { // closed once every key has arrived
		fmt.Println(string(b.RawData()))
	}
	fmt.Println(len(sim.RemoveSessionWants(session, []cid.Cid{blk.Cid()})), "key to CANCEL")
	// Output:
	// hello
	// 1 key to CANCEL
}

// tracedBlock stands for boxo's traceability.Block.
type tracedBlock struct {
	blocks.Block
	From  peer.ID
	Delay time.Duration
}

// A fork keeps today's tracing by wrapping each delivered block.
func ExampleWithBlockWrapper() {
	ps := bitswapcompat.NewPubSub(nil, bitswapcompat.WithBlockWrapper(
		func(b blocks.Block, from peer.ID, since time.Duration) blocks.Block {
			return tracedBlock{Block: b, From: from, Delay: since}
		}))
	defer ps.Shutdown()

	blk := blocks.NewBlock([]byte("traced"))
	ch := ps.Subscribe(context.Background(), blk.Cid())
	ps.Publish(peer.ID("remote"), blk)
	tb := (<-ch).(tracedBlock)
	fmt.Println(string(tb.RawData()), "from", string(tb.From))
	// Output: traced from remote
}
