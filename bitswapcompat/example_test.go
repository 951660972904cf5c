package bitswapcompat_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
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

// How a client wires both parts on one Notifier, with its blockstore and a
// cancel function: a session records its interest, a request of that session
// subscribes, a peer's message brings a wanted and an unwanted block, the
// client keeps the wanted one and publishes it, which stores it and hands it
// to the request. The session's interest outlives the delivery; when the
// session ends, its key goes to the cancel function, not to RemoveSession's
// result.
func ExampleNewWithOptions() {
	ctx := context.Background()
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	blk := blocks.NewBlock([]byte("wanted"))
	junk := blocks.NewBlock([]byte("never asked for"))
	name := map[cid.Cid]string{blk.Cid(): "wanted", junk.Cid(): "junk"}

	ps, sim := bitswapcompat.NewWithOptions(bs,
		bitswapcompat.WithCancelFunc(func(keys []cid.Cid) {
			for _, k := range keys {
				fmt.Println("CANCEL", name[k]) // queue CANCELs to peers: fast, no call back
			}
		}),
		bitswapcompat.WithErrorFunc(func(err error) { fmt.Println("error:", err) }))
	defer ps.Shutdown() // closes the Notifier too

	const session = 7
	sim.RecordSessionInterest(session, []cid.Cid{blk.Cid()})
	ch := ps.Subscribe(ctx, blk.Cid()) // not in bs yet: the request waits
	// The session sends its WANTs now.

	wanted, unwanted := sim.SplitWantedUnwanted([]blocks.Block{junk, blk})
	fmt.Println("wanted:", len(wanted), "unwanted:", len(unwanted), name[unwanted[0].Cid()])
	ps.Publish(peer.ID("peerA"), wanted...)
	for b := range ch { // closed once every key of the request has arrived
		fmt.Println("request got", name[b.Cid()])
	}
	stored, _ := bs.Has(ctx, blk.Cid())
	fmt.Println("stored:", stored, "session interested:", sim.InterestedSessions([]cid.Cid{blk.Cid()}))

	fmt.Println("RemoveSession returned", len(sim.RemoveSession(session)), "keys")
	// Output:
	// wanted: 1 unwanted: 1 junk
	// request got wanted
	// stored: true session interested: [7]
	// CANCEL wanted
	// RemoveSession returned 0 keys
}
