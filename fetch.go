package notifier

import (
	"context"
	"fmt"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// This file holds Fetch, the GetBlock of a client: a one-key request that
// takes no reservation when its key is alone (see shard_read.go's peek and relock).

// Fetch is the GetBlock of a bitswap client: one request for the block of k,
// checked in the blockstore and subscribed in one atomic step, as
// NewRequest(newFunc()) and a Subscribe of k are. If the blockstore has the
// block, Fetch mostly returns it and creates nothing: there is no
// subscription to remove, and newFunc is not called. Not always: when k is
// not alone at the start (another subscription wants it, or an operation
// holds it; interest subscriptions, NewInterest, do not count), or another
// operation names k or a key that shares its version (shardIndex.version)
// during the Get, Fetch takes the general path below,
// and a stored block then reaches the request's f before Fetch returns the
// request with a nil block. A caller must handle both outcomes. Otherwise
// (the block is not stored) it calls newFunc once, holding
// no lock, for the delivery function f of a request subscription that wants
// k, and returns that request, which the caller removes when it is done; f
// follows the rules of NewSubscriptionFunc and may receive the block before
// Fetch returns (then the request wants nothing more). A nil newFunc, or a
// nil f, discards the messages. newFunc lets a caller that keeps state per
// call (a channel to send into, say) make it only for a call that waits. On
// an error (ErrInvalidCid, ErrClosed, a failed blockstore check, ctx) nothing
// is created or changed, though newFunc may have been called: when k is not
// alone, the request is made before the check and removed again. With
// WithFailedCheckAsMiss a failed check is a miss instead: Fetch returns the
// request, which then waits for a block published after, and the error goes
// to that option's function. Fetch is safe for concurrent use and blocks as
// Subscribe does.
//
// When no subscription but interest subscriptions wants k and no operation
// reserves it, Fetch calls Get holding no lock, as a one-key Subscribe does
// (shard_read.go, peek), and does not even create the
// request if Get finds the block: the request would want nothing, receive
// the block and be removed, and no other operation could have seen it. So a
// hit commits nothing and takes no lock after the Get; it only reads k's
// version again, atomically. An unchanged version means that no operation
// named k between peek and that read, so the hit takes effect at peek, with
// the store as the Get saw it. A moved one may mean a Publish that stored
// the block the Get found and has not committed (nor run the cancel
// function): a hit that returned then would come after that Publish and yet
// see S, the subscription it delivers to, still wanting k, and return
// before the cancel function reporting k (G5). Every Publish that stores k
// through the Notifier bumps the version when it reserves k, before its
// PutMany, so the read after the Get sees it. A miss creates the request
// and commits its want under the shard lock if k's version has not moved,
// as subscribeOne does. If the version moved, or k is not alone at peek,
// Fetch falls back to NewRequest and Subscribe. (A first version skipped
// the version check on a hit; the review found the Publish above.)
func (n *Notifier) Fetch(ctx context.Context, k cid.Cid, newFunc func() func(ResponseMessage)) (blocks.Block, *Subscription, error) {
	if !k.Defined() {
		return nil, nil, fmt.Errorf("notifier: fetch: key: %w", ErrInvalidCid)
	}
	if n.closed.Load() {
		return nil, nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("notifier: fetch: %w", err)
	}
	var p probe
	p.begin(n, ctx) // observe.go hook
	var s *Subscription
	if n.bs != nil {
		blk, made, err, handled := n.fetchOne(ctx, k, newFunc, &p)
		if handled {
			if err == nil {
				n.passTaken(&p, made)
			}
			return blk, made, err
		}
		s = made // a request made for a miss whose commit found k's version moved
	}
	return n.fetchAll(ctx, k, s, newFunc, &p)
}

// fetchAll is Fetch on the general path, p carrying the time of fetchOne's
// Get if it made one; s is the request that fetchOne made, or nil.
func (n *Notifier) fetchAll(ctx context.Context, k cid.Cid, s *Subscription, newFunc func() func(ResponseMessage), p *probe) (blocks.Block, *Subscription, error) {
	if s == nil {
		s = n.newRequest(deliveryFunc(newFunc))
	}
	returned := false
	defer func() {
		if !returned { // f panicked or exited the goroutine: nobody else can remove s
			s.Remove()
		}
	}()
	err := s.subscribeAll(ctx, []cid.Cid{k}, p)
	returned = true
	if err != nil {
		s.Remove()
		return nil, nil, err
	}
	n.passTaken(p, s)
	n.m.refresh(n) // observe.go hook
	return nil, s, nil
}

// deliveryFunc is the delivery function of a request that Fetch makes.
func deliveryFunc(newFunc func() func(ResponseMessage)) func(ResponseMessage) {
	var f func(ResponseMessage)
	if newFunc != nil {
		f = newFunc()
	}
	if f == nil {
		f = func(ResponseMessage) {}
	}
	return f
}

// fetchOne is Fetch without reservations (see Fetch and peek). It reports
// handled false when the caller must take the general path, having changed
// nothing but, if it made it, returning the request that wants nothing yet.
func (n *Notifier) fetchOne(ctx context.Context, k cid.Cid, newFunc func() func(ResponseMessage), p *probe) (_ blocks.Block, _ *Subscription, _ error, handled bool) {
	sh, ver, _, ok := n.peek(k)
	if !ok {
		return nil, nil, nil, false
	}
	blk, err := n.getUnlocked(ctx, k, p)
	if err == nil && blk != nil {
		if n.shards[sh].idx.version(k) != ver {
			// An operation named k since peek, such as a Publish that stored
			// the block this Get found and has not committed yet: the hit
			// must come after it, so it takes the general path, which waits.
			p.err = nil
			return nil, nil, nil, false
		}
		p.end(opSubscribe, 1, 1, 0) // observe.go hook
		return blk, nil, nil, true
	}
	var s *Subscription
	if err == nil {
		s = n.newRequest(deliveryFunc(newFunc)) // before relock: no allocation under the shard lock
	}
	handled, err = n.missed(s, sh, k, ver, err, p) // s is nil if the Get failed
	switch {
	case !handled:
		return nil, s, nil, false
	case err != nil:
		return nil, nil, err, true // the Get failed, or s is closed (Close has begun)
	}
	return nil, s, nil, true
}

// A request (NewRequest) enters the registry, where Close finds it, only when
// Close would have something to do for it: when it first records a want, or
// when Messages() is first called and makes the done signal that Close must
// close (Subscription.enlist). A Subscribe of it asleep behind another
// operation needs no listing: Close wakes every such waiter (Notifier.done,
// await). The typical request, one Subscribe of a key that the blockstore
// has, never does, and so never takes n.mu. A request
// that Close cannot find has no want to end and no channel to close; it is
// closed lazily: Err reports ErrClosed once Close has begun, Subscribe refuses
// it, and Messages() returns a closed channel (enlist refuses it). enlist
// checks closed under n.mu (listRequest), and Close sets closed before it
// takes n.mu to collect the registry: so a request either is listed before
// Close collects, and Close closes it, or is refused, and closes itself as
// Close would have. The tempting shortcuts fail:
//
//   - Enlist after the want is recorded, or check closed before taking n.mu:
//     a Close that collects in between misses a want, which outlives Close
//     and never reaches the cancel function.
//   - Count a request in live only once listed, and the unlisted ones apart:
//     Stats would add two counters between which any number of requests
//     move, and miss some. counts holds every live subscription, and which
//     of them Close has closed lazily, for Stats after Close, in one word.
//   - Enlist without checking under s.mu that s is still open: a Messages()
//     racing Remove lists a removed request, which stays in the registry
//     until Close and is counted off twice.
