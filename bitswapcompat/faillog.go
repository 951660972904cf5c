package bitswapcompat

import (
	"sync/atomic"

	cid "github.com/ipfs/go-cid"
)

// failLog is what a Publish whose store failed leaves for the calls whose
// Subscribe is under way (begun, not yet tracked): failWaiting cannot find
// those calls in PubSub.calls, so it logs the keys, and track looks them up
// as it lists the call (call.missedFailure).
//
// An entry is needed only by a call that began before the failing Publish
// took its snapshot (call.seq <= the entry's snapshot) and has not settled.
// Epochs say when no such call is left without a lock on the hot path: a
// call belongs to the epoch in which it began, and is counted under way in
// that epoch's slot until it settles. The log keeps the entries of two
// epochs, each slot by parity. The epoch moves on (prune) only once the one
// before the current has no call under way, dropping the entries logged in
// it: every call that began up to that epoch has settled, and a call of a
// later epoch began after those entries' snapshots. A Subscribe is under way
// only for its own call (its Get, its commit, its listing), so an epoch
// drains as fast as Subscribes return, and the log holds the failures of
// about two Subscribes' time, whatever the number of calls. (A review found
// one map emptied only when no Subscribe was under way at all: under calls
// that keep overlapping it grew by every key whose store failed.)
type failLog struct {
	begun  atomic.Uint64   // calls whose Subscribe has begun so far (call.seq), read by failWaiting's callers
	epoch  atomic.Uint64   // the epoch in which a call that begins now begins; moved on by prune only
	active [2]atomic.Int64 // calls under way, by the parity of their epoch

	// keys is guarded by PubSub.mu: the failures logged in the current
	// epoch and the one before, by parity; each key with the largest
	// snapshot (begun) of the Publishes that failed to store it.
	keys [2]map[cid.Cid]uint64
}

// begin counts a call whose Subscribe begins, before that Subscribe can see
// the blockstore, and returns its place among the calls (seq) and its epoch;
// settle(epoch) must follow, once. The call is counted under way before it
// takes its seq, so a Publish whose snapshot includes the call finds it
// under way or settled. An epoch moved on between the read and the count is
// seen by the read after it, and the call counts itself in the new one.
func (l *failLog) begin() (seq, epoch uint64) {
	for {
		e := l.epoch.Load()
		l.active[e&1].Add(1)
		if l.epoch.Load() == e {
			return l.begun.Add(1), e
		}
		l.active[e&1].Add(-1)
	}
}

// settle ends the Subscribe of a call that begin counted in epoch.
func (l *failLog) settle(epoch uint64) { l.active[epoch&1].Add(-1) }

// underWay reports whether some Subscribe has begun and not settled.
func (l *failLog) underWay() bool { return l.active[0].Load()+l.active[1].Load() != 0 }

// prune drops the entries that no call under way can need: all of them when
// no Subscribe is under way; otherwise those of the epoch before the
// current, once it has no call under way, and the epoch moves on. The
// caller holds PubSub.mu.
func (l *failLog) prune() {
	if !l.underWay() {
		l.keys = [2]map[cid.Cid]uint64{}
		return
	}
	e := l.epoch.Load()
	if l.active[(e+1)&1].Load() == 0 {
		l.keys[(e+1)&1] = nil
		l.epoch.Store(e + 1)
	}
}

// add logs the failed store of k by a Publish whose snapshot was listed. The
// caller holds PubSub.mu.
func (l *failLog) add(k cid.Cid, listed uint64) {
	m := &l.keys[l.epoch.Load()&1]
	if *m == nil {
		*m = make(map[cid.Cid]uint64)
	}
	(*m)[k] = max((*m)[k], listed)
}

// failed reports the largest snapshot of a logged failure of k, 0 if none.
// The caller holds PubSub.mu.
func (l *failLog) failed(k cid.Cid) uint64 { return max(l.keys[0][k], l.keys[1][k]) }

// empty reports whether nothing is logged. The caller holds PubSub.mu.
func (l *failLog) empty() bool { return len(l.keys[0]) == 0 && len(l.keys[1]) == 0 }

// len is the number of entries logged, a key logged in both epochs counted
// twice. The caller holds PubSub.mu.
func (l *failLog) len() int { return len(l.keys[0]) + len(l.keys[1]) }
