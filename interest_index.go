package notifier

import (
	"cmp"
	"slices"
	"sync/atomic"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/shrink"
)

// This file holds the index's plain data: no locks, no goroutines. Each
// shardIndex is guarded by the mutex of the shard that owns it (shard.go).

// interest is the set of subscriptions that want one key.
//
// Invariant: subs is never empty while the interest is in an index and holds
// each subscription at most once; s is in subs exactly when s.keys maps the
// key to this interest. When a block ends every want of the key, the interest
// leaves the index and is marked ended, for good: the subscribers' entries
// in their keys maps then go stale in place instead of being deleted one by
// one on the delivery path (see Subscription.keys). An interest in the held
// map (interest subscriptions) never leaves it by delivery, so it never
// ends that way.
type interest struct {
	subs  []*Subscription
	first [1]*Subscription // backs subs while one subscription wants the key, the common case; once subs outgrew it, holds its subscriber until that want ends (endWant)

	// ended is set, under the shard lock and the locks of all its
	// subscribers (route locks its targets first), when the interest leaves
	// the index by delivery; it is never cleared, so it may be read without
	// the shard lock.
	ended atomic.Bool

	// scans counts the ends of wants that found their subscriber by a scan
	// of more than bigSubs subscribers (shardIndex.index); the index starts
	// keeping their positions once it reaches bigSubs, and again at the next
	// such end after it has dropped them (the scans it counts were paid
	// for). In ended's padding.
	scans uint32

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
// A key's wants live in one of two maps, by the kind of subscription: wants
// for the subscriptions whose want of a key ends when its block is delivered,
// held for interest subscriptions (Notifier.NewInterest), whose wants outlive
// delivery. A key is wanted while it is in either map.
type shardIndex struct {
	wants map[cid.Cid]*interest
	held  map[cid.Cid]*interest

	// The peaks of wants, held and marks: each of them gives back the
	// storage of a burst once it has shrunk to an eighth of it (shrink.Fit).
	wantsPeak, heldPeak, marksPeak shrink.Peak

	// big holds, for interests of more than bigSubs subscribers, where each
	// of them is in its subs, so that ending one want of a key that many
	// subscriptions share does not scan them all: ending the wants of N
	// subscribers of one key one by one took O(N²). An interest enters it
	// once bigSubs ends of its wants have scanned it (index; not before: a
	// key that many subscriptions want and few stop wanting pays nothing for
	// it), and leaves it once down to bigSubs/2 subscribers, or ended.
	big     map[*interest]*positions
	bigPeak shrink.Peak

	// res holds the keys that an operation has reserved while it calls the
	// blockstore with no lock held, and that operation, until it has
	// committed. An operation that would change the wants of a
	// reserved key waits for it instead (Notifier.lockFree), so the key
	// looks the same to the reserving operation before and after its I/O.
	res reservations

	// marks holds the keys that waiting operations wait for, one per
	// operation: an operation that started later waits for them too
	// (Notifier.markBusy). Every waiter that marked k is kept, so that the
	// unmark of one does not unmark k for the others.
	marks map[cid.Cid][]*op

	// vers counts, per bucket of keys (bucketOf), the critical sections that
	// named a key of the bucket: every operation that takes a key's shard
	// lock through lockFree, and every want added, bumps the key's bucket
	// (touch). A Subscribe of one key reads it before its unlocked Get and
	// again after: unchanged, nobody has touched the key in between
	// (Subscription.subscribeOne; see peek in shard_read.go). Written under the
	// shard's lock; a Subscribe that found its block may read it without
	// the lock (Subscription.commitHit).
	vers [versBuckets]atomic.Uint64

	// Gauges for Stats, written under the shard's lock, read without it.
	keys  atomic.Int64 // keys in wants or held, each once
	pairs atomic.Int64 // sum of len(subs) over both maps
}

func newShardIndex() shardIndex {
	return shardIndex{
		wants: make(map[cid.Cid]*interest),
		held:  make(map[cid.Cid]*interest),
		marks: make(map[cid.Cid][]*op),
	}
}

// bigSubs is the number of subscribers of one key over which their
// positions in interest.subs are kept (shardIndex.big): a scan of fewer is
// as fast as a map. A variable only so that tests can lower it before they
// start (-small-thresholds).
var bigSubs = 256

// positions maps each subscriber of one interest to its index in the
// interest's subs.
type positions struct {
	at   map[*Subscription]int
	peak shrink.Peak
}

// reservations is the set of reserved keys of one shard, each with the
// operation that reserved it (shardIndex.res). A shard mostly holds none or
// one: the first lives inline, where a Publish of one key reserves, checks
// and releases it without hashing; the others go to a map. A key is in one
// place only.
type reservations struct {
	key cid.Cid // the inline reservation's key, if op is not nil
	op  *op
	m   map[cid.Cid]*op // made on first use
	mp  shrink.Peak     // m's peak (shrink.Fit)
}

// empty reports whether no key is reserved.
func (r *reservations) empty() bool { return r.op == nil && len(r.m) == 0 }

// get returns the operation that reserved k, or nil.
func (r *reservations) get(k cid.Cid) *op {
	if r.op != nil && r.key == k {
		return r.op
	}
	if len(r.m) == 0 {
		return nil
	}
	return r.m[k]
}

// put reserves k for o. k is free, or o's already (a key repeated in o's
// message): the caller checked (Notifier.claimant).
func (r *reservations) put(k cid.Cid, o *op) {
	switch {
	case r.op != nil && r.key == k:
		r.op = o
	case r.op == nil && (len(r.m) == 0 || r.m[k] == nil):
		r.key, r.op = k, o
	default:
		if r.m == nil {
			r.m = make(map[cid.Cid]*op)
		}
		r.m[k] = o
		r.mp.Grew(len(r.m))
	}
}

// drop releases k if o reserved it.
func (r *reservations) drop(k cid.Cid, o *op) {
	if r.op == o && r.key == k {
		r.key, r.op = cid.Cid{}, nil
		return
	}
	if len(r.m) > 0 && r.m[k] == o {
		delete(r.m, k)
		r.m = shrink.Fit(r.m, &r.mp)
	}
}

// versBuckets is the number of version counters per shard: a bump for one
// key makes a concurrent Subscribe of another key of the same bucket start
// over, so more buckets mean fewer such false alarms.
const versBuckets = 32

// bucketOf returns the version bucket of k: the last byte of its multihash,
// whose digest makes it uniform for every hash but the identity.
func bucketOf(k cid.Cid) int {
	s := k.KeyString()
	if len(s) == 0 {
		return 0
	}
	return int(s[len(s)-1]) % versBuckets
}

// touch records that the caller's critical section names k (see vers).
func (x *shardIndex) touch(k cid.Cid) { x.vers[bucketOf(k)].Add(1) }

// version returns the version of k's bucket.
func (x *shardIndex) version(k cid.Cid) uint64 { return x.vers[bucketOf(k)].Load() }

// alone reports whether a Subscribe of k by a subscription whose wants end at
// delivery (not an interest subscription) may skip the reservations: no
// operation holds k (res), and no subscription of that kind, the subscriber
// included, wants it, so that a block found for k is for the subscriber
// alone.
//
// A waiter's mark on k does not count. It keeps k for the waiter against the
// operations that would reserve k, so that they do not overtake it; this one
// reserves nothing, and the waiter, once it goes on, bumps k's version
// (touchAll), which sends a Subscribe whose Get is under way to the general
// path. When a waiter kept a mark on every key it had found busy, a GetBlock
// sent to the general path by a mark waited for the waiter and so for
// whatever that waited for, perhaps a stalled PutMany of a key it does not
// name (G11; found by review). A waiter now marks only the key it waits for,
// which is reserved, or marked by an older waiter, until the waiter wakes
// and takes its next round; not counting the mark spares a GetBlock that
// moment. Before that, a mark that no longer held sent a GetBlock there too
// (found by the fuzzer: a Fetch of a stored key, behind such a mark, made a
// request and handed it the block instead of returning the block).
func (x *shardIndex) alone(k cid.Cid) bool {
	if x.res.get(k) != nil {
		return false
	}
	return x.wants[k] == nil
}

// markAhead returns the youngest operation that started before id (a
// smaller id) and whose mark on k still holds (op.holds), or nil if there is
// none: the one that an operation with that id waits for on k
// (Notifier.claimant). Every reader of the marks that decides who waits
// goes through it, so that a mark that no longer holds is ignored alike
// everywhere.
//
// The youngest, not the oldest: any older mark that holds makes the caller
// wait, and it wakes as that one lets go, to look again; each waiter waits
// for the one just ahead of it, so one letting go wakes one. Waiting for the
// oldest, the tempting choice, wakes every waiter behind it each time the
// oldest goes on, to find the next oldest and sleep again: M operations
// waiting on one key took M²/2 wake-ups, each taking the shard locks of all
// its keys (BenchmarkClosesBehindStall; TestIO_WaitersBehindOneKeyWakeOnce).
//
// marks[k] is sorted by id (addMark), so the first candidate found from the end
// is the youngest, and holds is asked of few marks.
func (x *shardIndex) markAhead(k cid.Cid, id uint64) *op {
	if len(x.marks) == 0 {
		return nil
	}
	ms := x.marks[k]
	for i := len(ms) - 1; i >= 0; i-- {
		if m := ms[i]; m.id < id && m.holds(x, k) {
			return m
		}
	}
	return nil
}

// addMark adds o's mark on k, keeping marks[k] sorted by id, unless o marks
// k already.
func (x *shardIndex) addMark(k cid.Cid, o *op) {
	ms := x.marks[k]
	i, found := slices.BinarySearchFunc(ms, o.id, func(m *op, id uint64) int { return cmp.Compare(m.id, id) })
	if !found {
		x.marks[k] = slices.Insert(ms, i, o)
		x.marksPeak.Grew(len(x.marks))
	}
}

// dropMark removes o's mark on k, if any.
func (x *shardIndex) dropMark(k cid.Cid, o *op) {
	ms := x.marks[k]
	i := slices.Index(ms, o)
	switch {
	case i < 0:
	case len(ms) == 1:
		delete(x.marks, k)
		x.marks = shrink.Fit(x.marks, &x.marksPeak)
	default:
		x.marks[k] = slices.Delete(ms, i, i+1)
	}
}

// marked reports whether o marks k.
func (x *shardIndex) marked(k cid.Cid, o *op) bool { return slices.Contains(x.marks[k], o) }

// table returns the map in which s's wants live.
func (x *shardIndex) table(s *Subscription) map[cid.Cid]*interest {
	if s.keeps {
		return x.held
	}
	return x.wants
}

// lookup returns the interest in k of the subscriptions whose wants end at
// delivery, or nil if none wants k.
func (x *shardIndex) lookup(k cid.Cid) *interest { return x.wants[k] }

// lookupFor returns the interest in k of the subscriptions of s's kind.
func (x *shardIndex) lookupFor(k cid.Cid, s *Subscription) *interest { return x.table(s)[k] }

// wanted reports whether any subscription wants k.
func (x *shardIndex) wanted(k cid.Cid) bool {
	return x.wants[k] != nil || x.held[k] != nil
}

// add records that s wants k and returns the interest. e is the current
// interest in k of s's kind (lookupFor), nil if none, and by the operation
// that adds it (see op.letGo). The caller has checked that s does not want
// k yet.
func (x *shardIndex) add(k cid.Cid, e *interest, s *Subscription, by *op) *interest {
	x.touch(k)
	if e == nil {
		if !x.wanted(k) {
			x.keys.Add(1)
		}
		e = &interest{}
		e.first[0] = s
		e.subs = e.first[:1]
		if s.keeps {
			x.held[k] = e
			x.heldPeak.Grew(len(x.held))
		} else {
			x.wants[k] = e
			x.wantsPeak.Grew(len(x.wants))
		}
	} else {
		e.subs = append(e.subs, s)
		x.placed(e)
	}
	x.pairs.Add(1)
	x.wakeSubscribes(k, s, by)
	return e
}

// wakeSubscribes wakes the waiting Subscribes of s that mark k, and the
// operations asleep on those marks: s has just started wanting k, so the
// marks no longer hold (op.holds), and those Subscribes may have nothing
// left to wait for. It is wakeStaleMarks for a want that begins, by being
// the operation that adds it. The caller holds k's shard lock.
func (x *shardIndex) wakeSubscribes(k cid.Cid, s *Subscription, by *op) {
	if len(x.marks) == 0 {
		return
	}
	for _, m := range x.marks[k] {
		if m.sub == s && m.scope == waitUnwanted {
			m.letGo(by)
		}
	}
}

// endWant ends s's want of k. It reports whether s wanted k, whether that was
// the last want of k by a subscription of s's kind (kindLast), and whether it
// was the last want of k at all, in which case k has left the index.
func (x *shardIndex) endWant(k cid.Cid, s *Subscription) (found, kindLast, last bool) {
	t := x.table(s)
	e := t[k]
	if e == nil {
		return false, false, false
	}
	i := x.index(e, s, true)
	if i < 0 {
		return false, false, false
	}
	end := len(e.subs) - 1
	e.subs[i] = e.subs[end]
	e.subs[end] = nil
	e.subs = shrink.Clip(e.subs[:end])
	x.moved(e, s, i)
	if e.first[0] == s { // subs has grown out of first, which still holds s: let go of it
		e.first[0] = nil
	}
	x.pairs.Add(-1)
	if end > 0 {
		return true, false, false
	}
	if s.keeps {
		delete(x.held, k)
		x.held = shrink.Fit(x.held, &x.heldPeak)
	} else {
		delete(x.wants, k)
		x.wants = shrink.Fit(x.wants, &x.wantsPeak)
	}
	if x.wanted(k) {
		return true, true, false
	}
	x.keys.Add(-1)
	return true, true, true
}

// index returns where s is in e.subs, or -1. For an interest of more than
// bigSubs subscribers whose positions are kept, it answers from them. If
// they are not kept and count is set (endWant), it scans and counts the
// scan, and once it has counted bigSubs scans it keeps them instead:
// building them hashes every subscriber and costs about as much as that many
// scans (35 µs against 0.14 µs for a scan of 300 subscribers, measured by a
// review), which a key that many sessions want, a few of them cancel and a
// block then ends should not pay. Ending N wants of one key one by one is so
// O(N) in all.
func (x *shardIndex) index(e *interest, s *Subscription, count bool) int {
	if len(e.subs) <= bigSubs {
		return slices.Index(e.subs, s)
	}
	var p *positions
	if len(x.big) > 0 {
		p = x.big[e]
	}
	if p == nil {
		if !count || int(e.scans) < bigSubs {
			if count {
				e.scans++
			}
			return slices.Index(e.subs, s)
		}
		p = x.keepPositions(e)
	}
	if i, ok := p.at[s]; ok {
		return i
	}
	return -1
}

// keepPositions starts keeping the positions of e's subscribers.
func (x *shardIndex) keepPositions(e *interest) *positions {
	if x.big == nil {
		x.big = make(map[*interest]*positions)
	}
	p := &positions{at: make(map[*Subscription]int, len(e.subs))}
	for i, s := range e.subs {
		p.at[s] = i
	}
	p.peak.Grew(len(p.at))
	x.big[e] = p
	x.bigPeak.Grew(len(x.big))
	return p
}

// placed records the position of the subscriber just appended to e.subs, if
// the positions of e's subscribers are kept.
func (x *shardIndex) placed(e *interest) {
	if len(x.big) == 0 {
		return
	}
	p := x.big[e]
	if p == nil {
		return
	}
	last := len(e.subs) - 1
	p.at[e.subs[last]] = last
	p.peak.Grew(len(p.at))
}

// moved records that s has left e.subs from position i, where the last
// subscriber has moved (endWant).
func (x *shardIndex) moved(e *interest, s *Subscription, i int) {
	if len(x.big) == 0 {
		return
	}
	p := x.big[e]
	if p == nil {
		return
	}
	if len(e.subs) <= bigSubs/2 {
		x.dropBig(e)
		return
	}
	delete(p.at, s)
	if i < len(e.subs) {
		p.at[e.subs[i]] = i
	}
	p.at = shrink.Fit(p.at, &p.peak)
}

// dropBig stops keeping the positions of e's subscribers.
func (x *shardIndex) dropBig(e *interest) {
	delete(x.big, e)
	x.big = shrink.Fit(x.big, &x.bigPeak)
}

// endDelivered ends every want of k that ends at delivery: its block has been
// delivered to all of them. It reports whether that was the last want of k,
// that is whether no interest subscription holds k. The subscribers' entries
// go stale; the interest lets go of them so that a stale entry keeps no other
// subscription alive.
func (x *shardIndex) endDelivered(k cid.Cid, e *interest) (last bool) {
	delete(x.wants, k)
	x.wants = shrink.Fit(x.wants, &x.wantsPeak)
	x.pairs.Add(-int64(len(e.subs)))
	e.ended.Store(true)
	e.first[0] = nil
	e.subs = nil
	if len(x.big) > 0 {
		x.dropBig(e)
	}
	if x.held[k] != nil {
		return false
	}
	x.keys.Add(-1)
	return true
}

// wakeStaleMarks wakes the operations asleep on the marks on k of the
// waiting closes of s, whose want of k has just ended (x.endWant). Such a
// mark holds nobody up any more (op.holds), and its sleepers must not sleep
// until the close's own wait, perhaps for a stalled blockstore call on
// another key, is over. A woken operation that still needs to wait for the
// close (another of its keys) asks for its wake-up channel again. The caller
// holds k's shard lock. wakeDelivered is the same for a delivery. by is
// the operation that ended the want: it resumes a pending close (op.letGo).
//
// Only the closes of s are looked at: a mark is the close's of one
// subscription, and holds only while that one wants k, so the others' marks
// are as they were. Asking every mark whether it holds, each a scan of k's
// wanters, made the closes of M subscriptions that want one key cost M³
// (BenchmarkClosesBehindStall).
//
// The mark stays, dormant: should the subscription want k again while the
// close waits, it holds again, and a later operation on k waits behind the
// close. Deleting it here, the tempting tidy-up, let such an operation
// overtake the close (review, TestIO_StaleMarkHoldsAgainWhenTheWantReturns);
// the close's unmark removes it.
//
// The close itself is woken too (op.nudgeClose), if it sleeps: it may have
// slept behind another operation for k alone, which it no longer needs.
// Without that, it slept on until that operation went on, perhaps after a
// stalled blockstore call on a key its subscription never wanted (G11;
// review, TestIO_CloseWakesWhenItsOwnWantEnds).
func (x *shardIndex) wakeStaleMarks(k cid.Cid, s *Subscription, by *op) {
	if len(x.marks) == 0 {
		return
	}
	for _, m := range x.marks[k] {
		if m.sub == s && !m.holds(x, k) {
			m.letGo(by)
		}
	}
}

// wakeDelivered is wakeStaleMarks for a delivery of k that is about to end
// every want of interest e (endDelivered): it wakes the closes of e's
// subscriptions that mark k, and their sleepers. It looks at e.subs before
// they go, not at which marks hold after: a close's mark that went dormant
// earlier holds no more after the delivery than before, and asking that
// woke the close, and everything asleep on it, once for each delivery of k
// to other subscriptions (review,
// TestIO_DeliveryToOthersWakesNoDormantClose). The caller holds k's shard
// lock, which it keeps until the wants have ended.
func (x *shardIndex) wakeDelivered(k cid.Cid, e *interest, by *op) {
	if len(x.marks) == 0 {
		return
	}
	for _, m := range x.marks[k] {
		if m.whileWanted() && x.index(e, m.sub, false) >= 0 {
			m.letGo(by)
		}
	}
}
