package legacy

import (
	"context"
	"sync"

	"github.com/cskr/pubsub"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// pubsubCapacity is the capacity boxo gives pubsub.New. It only sizes channels
// that cskr/pubsub creates itself, which Subscribe never asks for; it is kept so
// that the wrapped instance is built exactly as boxo builds it.
const pubsubCapacity = 16

// PubSub hands published blocks to the Subscribe calls waiting for them, as
// boxo's notifications.PubSub does (without its block tracing option).
//
// All methods are safe for concurrent use.
type PubSub struct {
	// mu is held shared around every call into ps and exclusively by Shutdown,
	// so that nothing is sent to ps after its goroutine has stopped (a send
	// to its command channel would then block forever).
	mu     sync.RWMutex
	ps     *pubsub.PubSub
	closed chan struct{} // closed by Shutdown, under mu held exclusively
}

// NewPubSub starts a PubSub; its goroutine runs until Shutdown. It does not
// block.
func NewPubSub() *PubSub {
	return &PubSub{
		ps:     pubsub.New(pubsubCapacity),
		closed: make(chan struct{}),
	}
}

func (p *PubSub) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// Publish sends each block to the topic of its CID. from, the sender (the
// zero ID for local blocks), is ignored: boxo's PubSub uses it only for block
// tracing. It is safe for concurrent use. It blocks until the pubsub
// goroutine has handed every block to the subscriptions of its topic, which
// never waits on a subscriber: each subscription has room for one value per
// key. After Shutdown it does nothing.
func (p *PubSub) Publish(_ peer.ID, blks ...blocks.Block) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.isClosed() {
		return
	}
	for _, b := range blks {
		p.ps.Pub(b, b.Cid().KeyString())
	}
}

// Subscribe returns a channel, buffered to len(keys), that receives the block
// of each key published after Subscribe returns, once per key. PubSub closes
// the channel when every key has arrived, when ctx is done or after Shutdown;
// a block that is in flight when ctx is done or Shutdown runs is dropped. A
// block published before Subscribe is never delivered: callers check their
// blockstore first, and a block stored in between is lost to them.
//
// It is safe for concurrent use and returns without waiting for any block;
// it starts one goroutine, which ends when the channel is closed. After
// Shutdown it returns a closed channel.
func (p *PubSub) Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block {
	out := make(chan blocks.Block, len(keys))
	if len(keys) == 0 {
		close(out)
		return out
	}
	// Our own buffer, one slot per key, so that the pubsub goroutine never
	// waits on this subscriber.
	in := make(chan any, len(keys))

	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.isClosed() {
		close(out)
		return out
	}
	p.ps.AddSubOnceEach(in, keyStrings(keys)...)
	go p.forward(ctx, in, out)
	return out
}

// forward moves values from the pubsub subscription in to out until every key
// arrived (the pubsub closes in), ctx is done, or the PubSub is shut down.
//
// The closed arms do nothing, as in boxo: after Shutdown the loop keeps
// polling until the pubsub goroutine closes in, and a block already taken
// from in is dropped. They are kept because the baseline is measured as it is.
func (p *PubSub) forward(ctx context.Context, in chan any, out chan<- blocks.Block) {
	defer p.release(in, out)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.closed:
		case v, ok := <-in:
			if !ok {
				return
			}
			b := v.(blocks.Block)
			select {
			case <-ctx.Done():
				return
			case out <- b:
			case <-p.closed:
			}
		}
	}
}

// release closes out and drops the pubsub subscription in. Unsubscribing from
// this goroutine is safe only because in never fills up: cskr/pubsub requires
// that a subscriber being removed keeps reading, or its goroutine deadlocks.
func (p *PubSub) release(in chan any, out chan<- blocks.Block) {
	close(out)
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.isClosed() {
		return // Shutdown closed every subscription already.
	}
	p.ps.Unsub(in)
}

// Shutdown stops the pubsub goroutine; the pubsub then closes every
// subscription, so every Subscribe channel is closed soon after. It is safe for
// concurrent use and idempotent. It waits for Publish and Subscribe calls in
// progress, not for the forwarding goroutines to end.
func (p *PubSub) Shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isClosed() {
		return
	}
	close(p.closed)
	p.ps.Shutdown()
}

func keyStrings(keys []cid.Cid) []string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.KeyString()
	}
	return s
}
