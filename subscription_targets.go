package notifier

import (
	"cmp"
	"slices"
)

// This file holds the locking of the subscriptions that an operation hands
// messages to, and the hand-out itself (step 5 of run.go). See
// subscription.go for the type.

// lockShared locks, for a Subscribe whose check found blocks that other
// subscriptions want too (hits with a block and an interest), the
// subscriptions that route will hand those blocks to: the subscriber and the
// others, the very targets of route. It reports whether there were any; then
// route's lockTargets finds them locked. Taking them before want records the
// wants, rather than in route, is what keeps a reader under the subscriber's
// lock alone (AppendWanted, closeIdle, commitHit) from seeing the
// Subscribe's wants recorded while the blocks it found are not queued: an
// operation that such a reader's caller starts next would reach s first
// (G6). The caller holds the hits' shard locks.
func (o *op) lockShared() bool {
	var seen map[*Subscription]struct{}
	for i := range o.hits {
		h := &o.hits[i]
		if h.blk == nil || h.e == nil {
			continue
		}
		for _, t := range h.e.subs {
			if seen == nil {
				seen = make(map[*Subscription]struct{})
			}
			if _, dup := seen[t]; dup {
				continue
			}
			seen[t] = struct{}{}
			o.order = append(o.order, lockEntry{seq: t.seq, s: t, t: -1})
		}
	}
	if len(o.order) == 0 {
		return false
	}
	if _, dup := seen[o.sub]; !dup { // always so: candidates skipped the keys s wants; but a lock taken twice would hang
		o.order = append(o.order, lockEntry{seq: o.sub.seq, s: o.sub, t: -1})
	}
	o.lockOrder()
	o.prelocked = true
	return true
}

// unlockShared releases what lockShared took, when want fails.
func (o *op) unlockShared() {
	for _, l := range o.order {
		l.s.mu.Unlock()
	}
	cut(&o.order) // zeroed: putOp clears only the entries in use, and a pooled op must keep no subscription alive
	o.prelocked = false
}

// lockTargets locks the target subscriptions, unless lockShared has. Those
// that take their messages through a function get them from handFuncs,
// under the shard locks; the channel subscriptions get theirs from handOut,
// once handOver has released the shard locks that the cancel function does
// not need. Holding every target's lock from before the first message to
// after the last is what makes two operations that reach the same
// subscriptions reach them all in the same order, whatever their shards.
//
// Several targets are locked in any order, without waiting (tryLockTargets),
// which almost always succeeds: a subscription's lock is held only briefly,
// by an operation delivering to it, its drain goroutine or a read. If one is
// held, lockTargets releases what it took and locks them all in ascending seq,
// the lock order. Sorting every time cost more than the rest of the locking.
func (o *op) lockTargets() {
	if o.prelocked { // by lockShared, the same set: list them with their targets
		o.order = o.order[:0]
	}
	first := len(o.order) // 0: route locks once per operation
	o.order = slices.Grow(o.order, len(o.targets))[:first+len(o.targets)]
	for i := range o.targets {
		l, s := &o.order[first+i], o.targets[i].s // in place, as buildOne writes targets
		l.seq, l.s, l.t = s.seq, s, i
	}
	if !o.prelocked {
		o.lockOrder()
	}
}

// lockOrder locks the subscriptions of o.order, trying first without
// waiting and else in ascending seq, the lock order.
func (o *op) lockOrder() {
	if len(o.order) == 1 {
		o.order[0].s.mu.Lock()
	} else if !o.tryLockTargets() {
		slices.SortFunc(o.order, func(a, b lockEntry) int { return cmp.Compare(a.seq, b.seq) })
		for _, l := range o.order {
			l.s.mu.Lock() // NOTE: several Subscription locks, in ascending seq
		}
	}
}

// handFuncs hands their messages to the targets that take them through a
// function (see NewSubscriptionFunc), which run under the shard locks as
// documented. The caller holds the targets' locks (lockTargets).
func (o *op) handFuncs() {
	for o.next < len(o.order) {
		l := o.order[o.next]
		o.next++ // before the function: if it panics, finish carries on after it
		if l.s.fn != nil {
			o.accept(&o.targets[l.t])
		}
	}
}

// tryLockTargets locks the targets in o.order without waiting. If one is
// held, it unlocks those it locked and returns false.
func (o *op) tryLockTargets() bool {
	for i, l := range o.order {
		if !l.s.mu.TryLock() {
			for _, t := range o.order[:i] {
				t.s.mu.Unlock()
			}
			return false
		}
	}
	return true
}

// handOut hands the channel subscriptions locked by lockTargets their
// messages and unlocks every target. The caller holds its shard locks, so
// that no operation on its keys sees it done before the messages are queued
// (see Notifier.handOver).
func (o *op) handOut() {
	for _, l := range o.order {
		if l.s.fn == nil {
			o.accept(&o.targets[l.t])
		}
	}
	for _, l := range o.order {
		l.s.mu.Unlock()
	}
}
