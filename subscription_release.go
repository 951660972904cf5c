package notifier

import (
	"context"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/shrink"
)

// This file holds Unsubscribe and Release: a subscription's wants of some
// keys ended, and the keys that nobody wants any more reported.

// Unsubscribe ends the subscription's wants of keys; keys it does not want are
// ignored. Keys that nobody wants any more go to the cancel function before
// Unsubscribe returns. It is safe for concurrent use and blocks only for
// other operations on the same shards, and for an operation whose blockstore
// call holds a reservation on one of keys that the subscription wants, until
// that call returns, and for an older operation that waits for one of those
// keys, until the call it waits for, on that key, returns (see doc.go). A
// key it does not want holds it up for no blockstore call (G11).
func (s *Subscription) Unsubscribe(keys ...cid.Cid) { s.release(keys, false) }

// Release is Unsubscribe that also returns the keys whose last want it ended,
// each once, in no particular order: for an interest subscription
// (NewInterest), the keys that no interest subscription wants any more — what
// boxo's SessionInterestManager.RemoveSessionWants returns — whatever other
// subscriptions still want them; for any other subscription, the keys that
// nobody wants any more, which also go to the cancel function. The result
// is computed under the shard locks of keys, so of several concurrent
// operations exactly one reports a key. The caller owns the slice.
func (s *Subscription) Release(keys ...cid.Cid) []cid.Cid { return s.release(keys, true) }

func (s *Subscription) release(keys []cid.Cid, report bool) []cid.Cid {
	if len(keys) == 0 {
		return nil
	}
	n := s.n
	o := n.getOp()
	defer n.putOp(o)
	o.setKeys(n, s, keys)
	o.scope = waitWanted
	_ = n.run(context.Background(), o, &releaseSteps) // cannot fail: it neither refuses Close nor has a deadline
	return o.report(report)
}

// releaseSteps: Unsubscribe and Release need no blockstore; their commit
// ends the wants.
var releaseSteps = steps{acquire: acquireAny, commit: commitRelease}

func commitRelease(_ *Notifier, o *op) error {
	s := o.sub
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range o.resKeys {
		e := s.keys[k]
		if e == nil {
			continue
		}
		delete(s.keys, k)
		s.keys = shrink.Fit(s.keys, &s.keysPeak)
		if e.ended.Load() {
			s.stale = max(s.stale-1, 0)
			continue
		}
		s.endWant(o, k, o.keyShards[i])
	}
	return nil
}

// endWant ends s's want of k in the index. If that was k's last want it
// queues k for the cancel function; if it was the last of s's kind (see
// Release), it adds k to o.freed. The caller holds k's shard lock and s.mu.
func (s *Subscription) endWant(o *op, k cid.Cid, sh int32) {
	x := &s.n.shards[sh].idx
	_, kindLast, last := x.endWant(k, s)
	x.wakeStaleMarks(k, s, o)
	if last {
		o.cancels = append(o.cancels, k)
		o.keep.Add(int(sh))
	}
	if last || (kindLast && s.keeps) {
		o.freed = append(o.freed, k)
	}
}
