package notifier

import (
	"sync/atomic"

	cid "github.com/ipfs/go-cid"
)

// This file holds the index's plain data: no locks, no goroutines. Each
// shardIndex is guarded by the mutex of the shard that owns it (notifier.go).

// interest is the set of subscriptions that want one key.
//
// Invariant: subs is never empty while the interest is in an index and holds
// each subscription at most once; s is in subs exactly when s.keys maps the
// key to this interest. When a block ends every want of the key, the interest
// leaves the index and is marked dropped, for good: the subscribers' entries
// in their keys maps then go stale in place instead of being deleted one by
// one on the delivery path (see Subscription.keys).
type interest struct {
	subs  []*Subscription
	first [1]*Subscription // backs subs while one subscription wants the key, the common case

	// dropped is set, under the shard lock, when the interest leaves the index
	// by delivery; it is never cleared, so it may be read without the lock.
	dropped atomic.Bool

	// seenOp and seenKinds deduplicate keys that repeat within one message.
	seenOp    uint64
	seenKinds kind
}

// visit reports whether op sees this key for the first time as k.
func (e *interest) visit(op uint64, k kind) bool {
	if e.seenOp != op {
		e.seenOp, e.seenKinds = op, 0
	}
	if e.seenKinds&k != 0 {
		return false
	}
	e.seenKinds |= k
	return true
}

// shardIndex maps the keys of one shard to the subscriptions that want them.
type shardIndex struct {
	wants map[cid.Cid]*interest

	// Gauges for Stats, written under the shard's lock, read without it.
	keys  atomic.Int64 // len(wants)
	pairs atomic.Int64 // sum of len(subs)
}

func newShardIndex() shardIndex {
	return shardIndex{wants: make(map[cid.Cid]*interest)}
}

// lookup returns the interest in k, or nil if nobody wants k.
func (x *shardIndex) lookup(k cid.Cid) *interest { return x.wants[k] }

// add records that s wants k and returns the interest. e is the current
// interest in k (lookup), nil if nobody wants k. The caller has checked that
// s does not want k yet.
func (x *shardIndex) add(k cid.Cid, e *interest, s *Subscription) *interest {
	if e == nil {
		e = &interest{}
		e.first[0] = s
		e.subs = e.first[:1]
		x.wants[k] = e
		x.keys.Add(1)
	} else {
		e.subs = append(e.subs, s)
	}
	x.pairs.Add(1)
	return e
}

// remove ends s's want of k. It reports whether s wanted k and whether that
// was the last want of k, in which case k has left the index.
func (x *shardIndex) remove(k cid.Cid, s *Subscription) (found, last bool) {
	e := x.wants[k]
	if e == nil {
		return false, false
	}
	for i, t := range e.subs {
		if t != s {
			continue
		}
		end := len(e.subs) - 1
		e.subs[i] = e.subs[end]
		e.subs[end] = nil
		e.subs = e.subs[:end]
		x.pairs.Add(-1)
		if end > 0 {
			return true, false
		}
		delete(x.wants, k)
		x.keys.Add(-1)
		return true, true
	}
	return false, false
}

// drop ends every want of k: its block has been delivered to all of them.
// The subscribers' entries go stale; the interest lets go of them so that a
// stale entry keeps no other subscription alive.
func (x *shardIndex) drop(k cid.Cid, e *interest) {
	delete(x.wants, k)
	x.keys.Add(-1)
	x.pairs.Add(-int64(len(e.subs)))
	e.dropped.Store(true)
	e.first[0] = nil
	e.subs = nil
}
