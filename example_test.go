package notifier_test

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/bitswapsync/notifier"
)

// A session's life: it subscribes to two blocks, hears that a peer has one,
// gets it, gives up on the other, and the client is told to cancel each key
// once nobody wants it.
func Example() {
	ctx := context.Background()
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	root := blocks.NewBlock([]byte("root"))
	leaf := blocks.NewBlock([]byte("leaf"))
	name := map[cid.Cid]string{root.Cid(): "root", leaf.Cid(): "leaf"}

	n := notifier.New(bs, notifier.WithCancelFunc(func(keys []cid.Cid) {
		for _, k := range keys {
			fmt.Println("CANCEL", name[k]) // a real client queues CANCELs to its peers here
		}
	}))
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	ses, _ := n.NewSubscription(1)
	if err := ses.Subscribe(ctx, root.Cid(), leaf.Cid()); err != nil {
		panic(err)
	}
	// The client sends WANTs only now: any CANCEL for these keys came before.

	_ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Haves: []cid.Cid{root.Cid()}})
	m := <-ses.Messages()
	fmt.Println(m.From, "has", name[m.Haves[0]])

	_ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{root}})
	m = <-ses.Messages()
	stored, _ := bs.Has(ctx, root.Cid())
	fmt.Println("got", name[m.Blocks[0].Cid()], "from", m.From, "stored:", stored)

	ses.Unsubscribe(leaf.Cid())
	ses.Remove()
	_, open := <-ses.Messages()
	fmt.Println("messages open:", open, "err:", ses.Err(), "stats:", n.Stats())
	// Output:
	// peerA has root
	// CANCEL root
	// got root from peerA stored: true
	// CANCEL leaf
	// messages open: false err: <nil> stats: {0 0 0}
}

// A request that starts after the block was stored still gets it: Subscribe
// checks the blockstore in the same step that records the want.
func ExampleSubscription_Subscribe_alreadyStored() {
	ctx := context.Background()
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	n := notifier.New(bs)
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	blk := blocks.NewBlock([]byte("added locally"))
	_ = n.Publish(ctx, notifier.ResponseMessage{Blocks: []blocks.Block{blk}}) // From "" = local

	ses, _ := n.NewSubscription(7)
	_ = ses.Subscribe(ctx, blk.Cid())
	m := <-ses.Messages()
	fmt.Printf("%s (local: %v)\n", m.Blocks[0].RawData(), m.From == "")
	// Output:
	// added locally (local: true)
}
