package notifier_test

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Reads in the linearizability test, and the order in which each
// subscription receives its messages (G6).
//
// A client also asks a session's subscription what it wants: AppendWanted,
// which takes the subscription's lock alone, of several keys, and Wants,
// which takes the key's shard lock, of one. A call of several keys is
// recorded as one read of each key, all with the call's interval
// (appendLinOp): each must take effect at some instant of it, and no two need
// take effect together. AppendWanted's doc promises more, one snapshot of all
// its keys; the test checks the weaker claim, which is what route's bug broke.
//
// Each subscription's messages are numbered in the order it received them
// (linRecorder.onMessage), and the model gives each delivery the next number
// of its slot (linState.recv): a linearization must order the operations that
// reach a subscription as the subscription received their messages (G6:
// publish order). Alone, that order constrains little: two operations that
// reach the same subscriptions concurrently may take effect in either order.
// A read pins one: once AppendWanted saw that an operation P ended s's want
// of j, P has taken effect, and an operation called after that read must
// reach s after P. That is the bug that route had while it ended the wants
// before it locked the targets (TestRoute_WantEndsOnlyWithItsMessage): while
// P waited for the lock of another target u, a read saw s's want of j ended,
// and the client's next operation (a Subscribe that found a stored block, or
// a Publish, of a key in another shard) reached s before P's message.
//
// Rounds that collect garbage (linGC) make no reads and do not check the
// order. A garbage collection changes the blockstore outside the Notifier,
// so it can fall between an operation's blockstore call and its commit: a
// Subscribe that found k before a DeleteBlock(k) delivers k after an
// operation called after that delete; a Publish whose PutMany wrote k before
// a DeleteBlock(k) still shows its wants to a read after it. Neither breaks a
// guarantee (the Notifier is linearizable with its own operations, and a
// Subscribe sees each key as it was at its own Get), but a model in which a
// delete is one more atomic operation cannot explain them once reads and the
// order are observed. Nor can it when the Notifier's own operations observe
// the wants in place of a read (a Subscribe of a key already wanted, a
// HAVE): for the keys a collection deleted during an operation's call, the
// model takes the blockstore as the operation saw it (markOverlaps). The other
// rounds change the blockstore only through the Notifier, under its
// reservations.
//
// The interleaving the bug needs is rare in plain rounds: a target's lock is
// held only for a moment, and without garbage collection a key's block ends
// wants once per round, as it stays stored. A quarter of linRound's rounds
// are tuned for it (linTuned, randomTunedIn): sessions share keys, their
// wants are read often and followed by a Subscribe of the same session, a
// delivery to s0 (first in the lock order) holds s0's lock while the other
// clients go on (linRecorder.hold), and fenced garbage collections (linFence)
// let keys be wanted again. Fenced puts write blocks behind the Notifier's
// back, as a blockservice does before it publishes them, so that a Subscribe
// finds a block that others want and delivers it to them too: the path of the
// same window on the Subscribe side (lockShared;
// TestSubscribe_FoundSharedBlockIsQueuedWithTheWants), which no round took
// before. Both windows stay rare here, the second most of all;
// TestPublishOrder_OperationSeenDoneComesFirst puts every round in one.

// A delivery to s0 in a linTuned round holds s0's lock until the other
// clients have made linHoldTicks steps of the round's clock (calls and
// returns), or for at most linHoldYields yields.
const (
	linHoldTicks  = 6
	linHoldYields = 1000
)

// hold is called by the delivery function of slot s before it returns, under
// s's lock. It yields once; in a linTuned round, for s0, the first
// subscription in the lock order, until the other clients have moved on (or
// as long as they cannot): an operation that delivers to s0 and to another
// subscription s waits for s0's lock before it locks s, and the others
// meanwhile read s and deliver to it.
func (r *linRecorder) hold(s int) {
	runtime.Gosched()
	if s != 0 || !r.holdFirst {
		return
	}
	start := r.clock.Load()
	for i := 0; i < linHoldYields && r.clock.Load() < start+linHoldTicks; i++ {
		runtime.Gosched()
	}
}

// linMode is the kind of a round.
type linMode uint8

const (
	linPlain linMode = iota // randomLinIn, no garbage collection; ordered
	linGC                   // randomLinIn with garbage collection; not ordered, no reads
	linTuned                // randomTunedIn; ordered
)

// linRoundMode is the mode of linRound's round seed: half the rounds collect
// garbage, a quarter are plain, a quarter tuned.
func linRoundMode(seed uint64) linMode {
	switch seed % 4 {
	case 0, 2:
		return linGC
	case 1:
		return linPlain
	}
	return linTuned
}

// linStallMode is the mode of linStallRound's round seed: half the rounds
// collect garbage, half are plain. (A fence, a sync.RWMutex, would keep
// synctest from seeing the bubble blocked.)
func linStallMode(seed uint64) linMode {
	if seed%2 == 0 {
		return linGC
	}
	return linPlain
}

// randomTunedIn draws the next operation of a tuned round, in which
// sessions subscribe to one or two keys at a time, peers send single blocks
// and HAVEs, a session's wants are read often and, half the time, the next
// operation of the client subscribes that session to more, garbage
// collections delete blocks so that keys are wanted again and again, and
// puts store blocks that sessions may still want. The collections and puts
// are fenced (linFence): a delete or put of k waits for every operation that
// reads or writes k's block, so no operation sees the blockstore change
// between its blockstore call and its commit, and all of the round is
// ordered.
func (cl *linClient) randomTunedIn(rng *rand.Rand) linIn {
	one := func() keySet { return 1 << rng.IntN(linKeys) }
	two := func() keySet { a, b := one(), one(); return a | b } // one key or two
	sess := rng.IntN(linSubs)
	if cl.readSub > 0 && rng.IntN(2) == 0 {
		sess = cl.readSub - 1
		cl.readSub = 0
		return linIn{kind: linSubscribe, sub: sess, keys: two()}
	}
	cl.readSub = 0
	switch rng.IntN(21) {
	case 0, 1, 2, 3, 4:
		return linIn{kind: linSubscribe, sub: sess, keys: two()}
	case 5:
		return linIn{kind: linUnsubscribe, sub: sess, keys: one()}
	case 6, 7, 8:
		cl.readSub = 1 + sess
		return linIn{kind: linWanted, sub: sess, keys: 1<<linKeys - 1}
	case 9:
		return linIn{kind: linWants, sub: sess, keys: one()}
	case 10, 11:
		return linIn{kind: linCollect, keys: one()}
	case 12:
		return linIn{kind: linFetch, keys: one()} // sub: the caller's request slot
	case 13, 14, 15:
		return linIn{kind: linPublish, remote: true, haves: one(), dhaves: maybe(rng, one())}
	case 16:
		return linIn{kind: linPut, keys: one()}
	}
	return linIn{kind: linPublish, remote: rng.IntN(4) > 0, blks: one()}
}

// maybe returns k once in linKeys draws, else nothing: a DONT_HAVE now and then.
func maybe(rng *rand.Rand, k keySet) keySet {
	if rng.IntN(linKeys) != 0 {
		return 0
	}
	return k
}

// linFence keeps the garbage collections and puts of a tuned round apart
// from the operations on their keys.
type linFence [linKeys]sync.RWMutex

// enter waits until in may run, if fenced, and returns what to call when it
// returned: a collection or a put excludes every operation that reads or
// writes its key's block, those share.
func (f *linFence) enter(in linIn, fenced bool) (exit func()) {
	if !fenced {
		return func() {}
	}
	var keys keySet
	switch in.kind {
	case linCollect, linPut:
		k := keyIndex(in.keys)
		f[k].Lock()
		return f[k].Unlock
	case linSubscribe, linFetch:
		keys = in.keys
	case linPublish:
		keys = in.blks
	}
	for k := range linKeys { // in key order: no deadlock
		if keys&(1<<k) != 0 {
			f[k].RLock()
		}
	}
	return func() {
		for k := range linKeys {
			if keys&(1<<k) != 0 {
				f[k].RUnlock()
			}
		}
	}
}

// read runs the read in, and records in out the keys it reported wanted.
// AppendWanted must return keys that it was asked about, once each, in
// their order; anything else is recorded as a wrong answer (badRead), which
// the model never gives.
func (cl *linClient) read(in linIn, out *linOut) {
	s := cl.subs[in.sub]
	if in.kind == linWants {
		if s.Wants(in.keys.cids()[0]) {
			out.wanted = in.keys
		}
		return
	}
	asked := in.keys.cids()
	got := s.AppendWanted(nil, asked)
	var dup bool
	out.wanted, dup = linAdd(0, false, got)
	// in order: got is a subsequence of asked
	i := 0
	for _, k := range got {
		j := slices.Index(asked[i:], k)
		if j < 0 {
			dup = true
			break
		}
		i += j + 1
	}
	out.badRead = dup || out.wanted&^in.keys != 0
}

// appendLinOp appends op to history; an AppendWanted of several keys as one
// read of each key, with the same interval and client, and its wrong answer,
// if any, on each.
func appendLinOp(history []porcupine.Operation, op porcupine.Operation) []porcupine.Operation {
	in, out := op.Input.(linIn), op.Output.(linOut)
	if !in.ordered {
		for s := range out.msgs {
			out.msgs[s].seq = 0
		}
		op.Output = out
	}
	if in.kind != linWanted {
		return append(history, op)
	}
	for k := range linKeys {
		if in.keys&(1<<k) == 0 {
			continue
		}
		one, res := in, out
		one.keys = 1 << k
		res.wanted &= one.keys
		op.Input, op.Output = one, res
		history = append(history, op)
	}
	return history
}

// TestLinearizability_ReportsMessageOrder feeds the checker the history of
// the bug in route's order (TestRoute_WantEndsOnlyWithItsMessage): a
// Publish P of k0 to s0 and s1 was under way; a read saw s1 no longer want
// k0, so P had taken effect; then s1 subscribed to k2, which was stored, and
// received it before P's message. The same history with the messages in the
// other order is linearizable.
func TestLinearizability_ReportsMessageOrder(t *testing.T) {
	history := func(pFirst bool) []porcupine.Operation {
		pSeq, xSeq := uint16(1), uint16(0)
		if pFirst {
			pSeq, xSeq = 0, 1
		}
		blk := func(k int, seq uint16) linMsg { return linMsg{n: 1, seq: seq, blks: 1 << k} }
		var p, x linOut
		p.msgs[0], p.msgs[1], p.cancels = blk(0, 0), blk(0, pSeq), 1
		p.msgs[0].remote, p.msgs[1].remote = true, true
		x.msgs[1] = blk(2, xSeq)
		return []porcupine.Operation{
			{ClientId: 0, Input: linIn{kind: linPublish, blks: 1 << 2, ordered: true}, Call: 1, Output: linOut{}, Return: 2},
			{ClientId: 0, Input: linIn{kind: linSubscribe, sub: 0, keys: 1, ordered: true}, Call: 3, Output: linOut{}, Return: 4},
			{ClientId: 0, Input: linIn{kind: linSubscribe, sub: 1, keys: 1, ordered: true}, Call: 5, Output: linOut{}, Return: 6},
			{ClientId: 1, Input: linIn{kind: linPublish, remote: true, blks: 1, ordered: true}, Call: 7, Output: p, Return: 12},
			{ClientId: 2, Input: linIn{kind: linWanted, sub: 1, keys: 1, ordered: true}, Call: 8, Output: linOut{}, Return: 9},
			{ClientId: 2, Input: linIn{kind: linSubscribe, sub: 1, keys: 1 << 2, ordered: true}, Call: 10, Output: x, Return: 11},
		}
	}
	if res := porcupine.CheckOperationsTimeout(linModel, history(true), time.Second); res != porcupine.Ok {
		t.Fatalf("checker says %v for the messages in publish order", res)
	}
	if res := porcupine.CheckOperationsTimeout(linModel, history(false), time.Second); res != porcupine.Illegal {
		t.Fatalf("checker says %v for a subscription that received a later operation's message first", res)
	}
}
