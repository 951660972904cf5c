package notifier

import (
	"context"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// This file holds the shard's critical sections of the one-key read path
// (Subscription.subscribeOne, Notifier.Fetch): the version read before the
// Get, and the commit after it. Like shard.go, it owns shard locks.

// A Subscribe of one key that nobody of its kind wants (the GetBlock of a
// bitswap client) skips the reservations: it reads its key's version under
// the shard lock (peek), calls Get holding no lock and reserving nothing,
// and commits only if the version has not moved: after a miss under the
// shard lock again (relock), to record the want; after a hit mostly under
// the subscription's lock alone (see below). Every operation that takes the
// key's shard lock to read its wants, change them or reserve it (Publish,
// Subscribe, Unsubscribe, Release) bumps the version as it takes the lock
// (lockFree's touchAll), and
// every want added bumps it (shardIndex.add). The closes (Remove, a
// slow-consumer end, Close) only end wants, and the key had none of the
// Subscribe's kind at peek, nor can it gain one unbumped; ending a want of
// the other kind changes nothing the Subscribe decides (it reports the key
// to the cancel function under the shard lock, before relock can take it).
// A key reserved at peek sends the Subscribe to the general path at once; a
// waiter's mark does not (see shardIndex.alone), as its waiter bumps the key
// when it proceeds. So an
// unchanged version means that no operation of the Notifier has touched the
// key in a way that matters between the two critical sections: to them the
// Subscribe is one critical section, at relock, with the blockstore as its
// Get saw it (the read calls see the want from relock, as they see a
// reserving operation's from its commit; see doc.go).
//
// A hit adds no want and changes nothing that the shard lock guards: all it
// decides is that s does not want k, and it hands the block over under s.mu.
// So if nobody wanted k at peek, and s has no delivery function, it reads
// the version under s.mu without the shard lock (the versions are atomic
// for that; Subscription.commitHit). A want of k by s is recorded under
// s.mu, after the bump of shardIndex.add in the same critical section: one
// recorded before the commit took s.mu shows in the version, and one
// recorded after it comes after the Subscribe, which is then the critical
// section of s.mu. Every other operation bumps the version as it takes the
// shard lock, before it reads or changes k's entries, so an unchanged
// version still means that none has touched k since peek; and one that
// touches k later finds s not wanting it, as the hit leaves it. Nor can a
// close have reported k to the cancel function meanwhile: k had no want at
// peek, and every want added since would have bumped the version. The other
// hits commit under the shard lock, after relock, as a miss does:
//   - k wanted at peek by an interest subscription: a close of it ends that
//     want without a bump and reports k to the cancel function under k's
//     shard lock; a Subscribe ordered after that close (its subscription got
//     first a message published once the close had taken effect) must not
//     return before the cancel function does (G5, WithCancelFunc).
//   - s with a delivery function, which runs under the shard locks of its
//     message's keys (NewSubscriptionFunc).
//
// A moved version sends
// it to the general path, which calls Get again with the key reserved, even
// when the Get failed (a Subscribe of the key by the same subscription
// meanwhile makes the call a no-op that must not fail); a bump for another
// key of the same bucket is a false alarm that costs that second Get. The
// tempting shortcuts fail:
//
//   - Get, then lock and commit, checking only that the key is not reserved
//     now: a local Publish of the key that reserves, stores and commits
//     during the Get, finding nobody to deliver to, leaves a Get that missed
//     to record a want that the stored block never meets (a lost wakeup).
//   - Check at peek only that nobody wants the key, not that nobody reserves
//     it: a Publish in its PutMany of the key has planned without this want
//     and delivers nothing to it.
//   - Skip peek and read the version without the lock: a version read in the
//     middle of another operation's critical section describes a state that
//     never held, and alone must read the entries with it.
//   - Commit every hit under s.mu alone: see the two exceptions above.
//   - Commit a hit under s.mu with no version check, since s's own wants are
//     under s.mu: a Subscribe of k by s during the Get that missed (its Get
//     came first, or the block was stored behind the Notifier's back) has
//     recorded a want; the hit would hand s the block while s still wants
//     k, where the Subscribe must be a no-op. Telling a live entry of s.keys
//     from a stale one needs the index, hence the shard lock; the version
//     answers without it.

// peek is the first critical section of Subscription.subscribeOne and of
// Notifier.Fetch: under k's shard lock it checks that the Notifier is open
// and that a Subscribe of k by a subscription that is not an interest
// subscription may skip the reservations (shardIndex.alone), and if so counts
// an operation in the blockstore, as reserve does, so that Close waits for
// the Get, and returns k's shard and version. Otherwise ok is false and the
// caller takes the general path. wanted reports whether an interest
// subscription wants k: then a hit commits under the shard lock.
func (n *Notifier) peek(k cid.Cid) (sh int32, ver uint64, wanted, ok bool) {
	sh = n.shardOf(k)
	x := &n.shards[sh]
	x.mu.Lock()
	defer x.mu.Unlock()
	if n.closed.Load() || !x.idx.alone(k) {
		return sh, 0, false, false
	}
	n.inflight.Add(1)
	return sh, x.idx.version(k), x.idx.held[k] != nil, true // alone: nobody in wants
}

// getUnlocked is the Get of Subscription.subscribeOne and Notifier.Fetch,
// holding no lock, between peek and relock; a block not found is (nil,
// nil), and so is a failure that the Notifier takes for a miss
// (n.takesMiss; then p.taken holds it). p times the call. It ends the count
// of the operation in the blockstore that peek began, even if Get panics:
// else Close would wait for ever.
func (n *Notifier) getUnlocked(ctx context.Context, k cid.Cid, p *probe) (blocks.Block, error) {
	defer n.inflight.Done()
	t := p.clock() // observe.go hook
	blk, err := n.bs.Get(ctx, k)
	if err != nil && isNotFound(err) {
		blk, err = nil, nil
	}
	p.storeDone(ctx, t, 0, err) // observe.go hook
	if n.takesMiss(ctx, err) {
		p.taken = checkError(k, err)
		return nil, nil
	}
	return blk, err
}

// missed ends a subscribeOne or a Fetch whose Get found no block, or failed
// with getErr: under k's shard lock again, sh being k's shard, if k's
// version is still ver, it returns getErr wrapped, or else records s's want
// of k (endOne's error if that fails). It reports handled false, having
// changed nothing, if the version moved: the caller takes the general path.
func (n *Notifier) missed(s *Subscription, sh int32, k cid.Cid, ver uint64, getErr error, p *probe) (handled bool, err error) {
	if !n.relock(sh, k, ver) {
		// Even a failed Get: a Subscribe of k by s meanwhile makes this
		// one a no-op that consults nothing (found by the fuzzer). Its
		// error is not the call's, so the observers must not report it,
		// nor the function of WithFailedCheckAsMiss hear of it.
		p.forgetFailure()
		return false, nil
	}
	if getErr != nil {
		n.unlockShard(sh)
		p.end(opSubscribe, 1, 0, 0) // observe.go hook
		return true, checkError(k, getErr)
	}
	err = s.commitWant(&n.shards[sh].idx, k)
	n.unlockShard(sh)
	return true, s.endOne(p, nil, false, err)
}

// relock takes k's shard lock again after getUnlocked, sh being k's shard.
// It reports whether k's version is still ver; if not, it releases the lock.
func (n *Notifier) relock(sh int32, k cid.Cid, ver uint64) bool {
	x := &n.shards[sh]
	x.mu.Lock()
	if x.idx.version(k) != ver {
		x.mu.Unlock()
		return false
	}
	return true
}

// unlockShard releases the lock of shard sh that relock took.
func (n *Notifier) unlockShard(sh int32) { n.shards[sh].mu.Unlock() }
