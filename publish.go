package notifier

import (
	"context"
	"fmt"

	cid "github.com/ipfs/go-cid"
)

// This file holds Publish: its plan and blockstore steps (run.go) and the
// collection of a message's keys into the operation's hits.

// Publish stores the blocks of msg that must be stored and hands every
// subscription the part of msg that it wants, as one atomic step on msg's
// keys:
//
//   - blocks from a remote peer (From != "") are stored only if some
//     subscription wants them; local blocks (From == "") always are;
//   - if PutMany fails, nothing is delivered, no want changes, and the error
//     is returned wrapped;
//   - each subscription that wants any key of msg gets one message filtered to
//     its keys; a delivered block ends the wants of its key, and keys nobody
//     wants any more go to the cancel function.
//
// A message with a nil block (ErrNilBlock) or an undefined CID
// (ErrInvalidCid) is refused whole. Publish is safe for concurrent use. It
// never waits for a subscriber to read. It calls PutMany holding no lock of
// the Notifier, with the message's keys reserved: until it returns, other
// operations that would change the wants of those keys wait for it, and
// operations on other keys, in any shard, do not. It blocks only for the
// blockstore, for operations holding the same shard locks or reservations on
// its keys, or older ones that wait for one of its keys, until the blockstore
// call they wait for, on that key, returns (see doc.go; ctx ends that wait). A
// subscription it overflows past WithMaxPending it ends without waiting: if
// another operation holds up one of that subscription's keys, the end is
// left to that operation (Subscription.closeSlow). It may also end, before it
// returns, the pending ends of slow consumers that it held up itself. It
// returns ErrClosed after Close; bad input is refused first, with ErrNilBlock
// or ErrInvalidCid, closed or not, so that a caller's bug does not hide
// behind a shutdown. (A nil interface is ErrNilBlock; a nil pointer of a
// concrete block type is not detected: its Cid method panics, before any
// lock is taken and anything changes, as it does in boxo's Publish.)
func (n *Notifier) Publish(ctx context.Context, msg ResponseMessage) error {
	if err := msg.validate(); err != nil {
		return err
	}
	if n.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("notifier: publish: %w", err)
	}
	if msg.empty() {
		return nil
	}
	o := n.getOp()
	defer n.putOp(o)
	o.probe.begin(n, ctx)            // observe.go hook
	defer o.probe.done(opPublish, o) // observe.go hook
	o.msg, o.from = msg, msg.From    // a copy: a pointer to msg would move it to the heap
	n.shardKeys(o, &o.msg)
	return n.run(ctx, o, &publishSteps)
}

// publishSteps: Publish plans under the locks which keys are wanted and which
// blocks to store, and stores them with every key of the message reserved.
// The reservations keep every other operation that would change the wants of
// those keys out until the commit, so what the plan decided still holds and
// the Publish takes effect at one instant, the PutMany's, for those keys and
// the blockstore alike. (The HAVEs and DONT_HAVEs are reserved too:
// collecting them again after the PutMany would split the Publish in two
// instants, and a garbage collection deleting one of its blocks in between
// would tell them apart.) Its commit is the hand-over alone.
var publishSteps = steps{acquire: acquireOpen, plan: planPublish, io: storeBlocks}

func planPublish(n *Notifier, o *op) error {
	n.collect(o, &o.msg)
	o.probe.collected(n, o, &o.msg) // observe.go hook
	o.io = n.bs != nil && len(o.store) > 0
	return nil
}

func storeBlocks(ctx context.Context, n *Notifier, o *op) error {
	t := o.probe.clock() // observe.go hook
	err := n.bs.PutMany(ctx, o.store)
	o.probe.storeDone(ctx, t, len(o.store), err) // observe.go hook
	if err != nil {
		return fmt.Errorf("notifier: publish %d blocks from %q: store: %w", len(o.store), o.msg.From, err)
	}
	return nil
}

// shardKeys records every key of msg in o.resKeys, its shard in o.keyShards,
// and adds the shard to o.locks.
func (n *Notifier) shardKeys(o *op, msg *ResponseMessage) {
	add := func(k cid.Cid) {
		sh := n.shardOf(k)
		o.resKeys = append(o.resKeys, k)
		o.keyShards = append(o.keyShards, sh)
		o.locks.Add(int(sh))
	}
	for _, b := range msg.Blocks {
		add(b.Cid())
	}
	for _, k := range msg.Haves {
		add(k)
	}
	for _, k := range msg.DontHaves {
		add(k)
	}
}

// collect decides, under the shard locks, which keys of msg are wanted (o.hits)
// and which blocks to store (o.store).
func (n *Notifier) collect(o *op, msg *ResponseMessage) {
	i := 0
	for _, b := range msg.Blocks {
		k, sh := b.Cid(), o.keyShards[i]
		i++
		idx := &n.shards[sh].idx
		e := idx.lookup(k)
		if e == nil || !e.visit(o.id, kindBlock) {
			if e == nil && n.storeUnrouted(idx, k, o, msg.From) {
				o.store = append(o.store, b)
			}
			continue
		}
		if n.bs != nil { // without a blockstore o.store is never read: o.io stays false
			o.store = append(o.store, b)
		}
		o.hits = append(o.hits, hit{}) // then filled in place, as buildOne writes targets
		h := &o.hits[len(o.hits)-1]
		h.key, h.e, h.shard, h.kind, h.blk = k, e, sh, kindBlock, b
	}
	for _, ks := range [...]struct {
		keys []cid.Cid
		kind kind
	}{{msg.Haves, kindHave}, {msg.DontHaves, kindDontHave}} {
		for _, k := range ks.keys {
			sh := o.keyShards[i]
			i++
			if e := n.shards[sh].idx.lookup(k); e != nil && e.visit(o.id, ks.kind) {
				o.hits = append(o.hits, hit{key: k, e: e, shard: sh, kind: ks.kind})
			}
		}
	}
}

// storeUnrouted reports whether a block for k that no subscription will be
// handed must be stored all the same: it is local, or an interest
// subscription wants k; and o has not decided to store it already, as for a
// key repeated in one message.
func (n *Notifier) storeUnrouted(idx *shardIndex, k cid.Cid, o *op, from string) bool {
	if h := idx.held[k]; h != nil {
		return h.visit(o.id, kindBlock)
	}
	return from == "" && !o.storing(k)
}
