package notifier_test

import (
	"context"
	"errors"
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

// A subscription can take its messages in a function instead of a channel.
// The function runs inside the operation that delivers, so the block is there
// before Publish returns; Messages() then yields nothing and only says, by
// being closed, that the subscription has ended.
func ExampleNotifier_NewSubscriptionFunc() {
	ctx := context.Background()
	n := notifier.New(nil)
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	blk := blocks.NewBlock([]byte("pushed"))
	ses, _ := n.NewSubscriptionFunc(3, func(m notifier.ResponseMessage) {
		// Under the Notifier's locks: be fast, do not block, do not call back.
		fmt.Printf("delivered %q from %s\n", m.Blocks[0].RawData(), m.From)
	})
	_ = ses.Subscribe(ctx, blk.Cid())

	_ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{blk}})
	fmt.Println("Publish returned")
	select {
	case <-ses.Messages():
		fmt.Println("Messages() yielded something")
	default:
		fmt.Println("Messages() holds nothing")
	}

	ses.Remove()
	_, open := <-ses.Messages()
	fmt.Println("after Remove, Messages() open:", open)
	// Output:
	// delivered "pushed" from peerA
	// Publish returned
	// Messages() holds nothing
	// after Remove, Messages() open: false
}

// A subscription that does not read falls behind. With a channel of one
// message and one more allowed to wait, at most three messages fit (one in the
// channel, one being handed to it, one waiting); the Publish that overflows
// ends the subscription instead of blocking or dropping silently: Err says
// why, Messages() is closed, and its wants are released, so the cancel
// function hears of its key.
func ExampleWithMaxPending() {
	ctx := context.Background()
	k := blocks.NewBlock([]byte("wanted")).Cid()
	n := notifier.New(nil,
		notifier.WithBufferSize(1),
		notifier.WithMaxPending(1),
		notifier.WithCancelFunc(func(keys []cid.Cid) {
			fmt.Println("CANCEL", len(keys), "key, ours:", keys[0] == k)
		}))
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	slow, _ := n.NewSubscription(1)
	_ = slow.Subscribe(ctx, k)
	for _, p := range []string{"peerA", "peerB", "peerC", "peerD", "peerE"} {
		// A HAVE does not end the want, so every message is for slow.
		if err := n.Publish(ctx, notifier.ResponseMessage{From: p, Haves: []cid.Cid{k}}); err != nil {
			fmt.Println("publish:", err) // not reached: Publish never waits for a reader
		}
	}

	for range slow.Messages() { // what the channel held, then closed
	}
	fmt.Println("err is ErrSlowConsumer:", errors.Is(slow.Err(), notifier.ErrSlowConsumer))
	fmt.Println("still wants the key:", slow.Wants(k), "wanted at all:", n.Wanted(k))
	fmt.Println("Subscribe after the end:", errors.Is(slow.Subscribe(ctx, k), notifier.ErrSlowConsumer))
	// Output:
	// CANCEL 1 key, ours: true
	// err is ErrSlowConsumer: true
	// still wants the key: false wanted at all: false
	// Subscribe after the end: true
}

// The cancel function hears of a key once, when its last want ends, from
// inside the operation that ended it: here an Unsubscribe by the last of two
// subscribers, then the delivery of a block. It returns before that operation
// does, so a later Subscribe (and the WANT sent after it) always follows the
// CANCEL.
func ExampleWithCancelFunc() {
	ctx := context.Background()
	x := blocks.NewBlock([]byte("x"))
	y := blocks.NewBlock([]byte("y"))
	name := map[cid.Cid]string{x.Cid(): "x", y.Cid(): "y"}
	n := notifier.New(nil, notifier.WithCancelFunc(func(keys []cid.Cid) {
		for _, k := range keys {
			fmt.Println("  CANCEL", name[k]) // fast, non-blocking, no call back into n
		}
	}))
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	a, _ := n.NewSubscription(1)
	b, _ := n.NewSubscription(2)
	_ = a.Subscribe(ctx, x.Cid(), y.Cid())
	_ = b.Subscribe(ctx, x.Cid())

	fmt.Println("a unsubscribes x")
	a.Unsubscribe(x.Cid()) // b still wants x: nothing to cancel
	fmt.Println("b unsubscribes x")
	b.Unsubscribe(x.Cid()) // the last want of x
	fmt.Println("y arrives")
	_ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{y}})
	fmt.Println("a received", name[(<-a.Messages()).Blocks[0].Cid()])
	// Output:
	// a unsubscribes x
	// b unsubscribes x
	//   CANCEL x
	// y arrives
	//   CANCEL y
	// a received y
}

// A Notifier without a blockstore only notifies, for a client that stores
// received blocks elsewhere: Publish stores nothing, Subscribe checks
// nothing, and a block published while it is wanted is delivered.
func ExampleNew_notifyOnly() {
	ctx := context.Background()
	n := notifier.New(nil)
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	blk := blocks.NewBlock([]byte("block"))
	_ = n.Publish(ctx, notifier.ResponseMessage{Blocks: []blocks.Block{blk}}) // local, but not kept

	ses, _ := n.NewSubscription(1)
	_ = ses.Subscribe(ctx, blk.Cid())
	select {
	case <-ses.Messages():
		fmt.Println("found by Subscribe")
	default:
		fmt.Println("Subscribe found nothing: nothing was stored")
	}

	_ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{blk}})
	m := <-ses.Messages()
	fmt.Printf("delivered %q from %s\n", m.Blocks[0].RawData(), m.From)
	// Output:
	// Subscribe found nothing: nothing was stored
	// delivered "block" from peerA
}

// A client's GetBlock: Fetch returns a block that is already stored, making
// nothing; for one that is not, it makes the request (and its channel, in
// newFunc) that waits for it, and the client sends its WANT once Fetch has
// returned.
func ExampleNotifier_Fetch() {
	ctx := context.Background()
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	have := blocks.NewBlock([]byte("have"))
	want := blocks.NewBlock([]byte("want"))
	n := notifier.New(bs)
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	_ = n.Publish(ctx, notifier.ResponseMessage{Blocks: []blocks.Block{have}}) // a local add

	getBlock := func(k cid.Cid) blocks.Block {
		var ch chan blocks.Block
		blk, req, err := n.Fetch(ctx, k, func() func(notifier.ResponseMessage) {
			ch = make(chan blocks.Block, 1) // only for a call that waits
			return func(m notifier.ResponseMessage) {
				if len(m.Blocks) > 0 {
					ch <- m.Blocks[0] // never blocks: one block, one slot
				}
			}
		})
		if err != nil {
			panic(err)
		}
		if req == nil {
			fmt.Println("stored; nothing made")
			return blk
		}
		defer req.Remove()
		fmt.Println("waiting; the client sends its WANT now")
		go func() { _ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{want}}) }()
		return <-ch
	}
	fmt.Println(string(getBlock(have.Cid()).RawData()))
	fmt.Println(string(getBlock(want.Cid()).RawData()))
	fmt.Println("stats:", n.Stats())
	// Output:
	// stored; nothing made
	// have
	// waiting; the client sends its WANT now
	// want
	// stats: {0 0 0}
}

// flakyStore is a blockstore whose Gets fail while down is set, as a disk
// that times out now and then.
type flakyStore struct {
	blockstore.Blockstore
	down bool
}

func (s *flakyStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if s.down {
		return nil, errors.New("disk timeout")
	}
	return s.Blockstore.Get(ctx, c)
}

// A client that asks the network when its blockstore check fails, as boxo's
// block service does: the failed check is a miss, the want stays, and the
// block that a peer sends is delivered.
func ExampleWithFailedCheckAsMiss() {
	ctx := context.Background()
	bs := &flakyStore{Blockstore: blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))}
	blk := blocks.NewBlock([]byte("block"))
	n := notifier.New(bs, notifier.WithFailedCheckAsMiss(func(err error) {
		fmt.Println("check failed:", errors.Unwrap(err))
	}))
	defer n.Close() //nolint:errcheck // Close never fails; an example keeps to the point

	ses, _ := n.NewSubscription(1)
	bs.down = true
	err := ses.Subscribe(ctx, blk.Cid())
	fmt.Println("subscribe:", err, "wanted:", ses.Wants(blk.Cid()))
	bs.down = false // the client sends its WANT; a peer answers

	_ = n.Publish(ctx, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{blk}})
	m := <-ses.Messages()
	fmt.Println("got", string(m.Blocks[0].RawData()), "from", m.From)
	// Output:
	// check failed: disk timeout
	// subscribe: <nil> wanted: true
	// got block from peerA
}
