package notifier_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	blockstore "github.com/ipfs/boxo/blockstore"

	notifier "github.com/bitswapsync/notifier"
)

// Fetch in the linearizability test. Each client has a request slot in the
// model (linReqSlot), a subscription that wants nothing until the client's
// Fetch returns a request into it, and again after the client's Remove of
// that request, which it records as an operation of its own, a few
// operations later (linClient.next). Until then the request is an ordinary
// subscription of the model: other clients' Publishes deliver to it, and its
// Remove reports to the cancel function the keys whose last want it ends.
// Its delivery function files its messages under the operation that delivers
// them, by goroutine ID (linRecorder), as the sessions' functions do.
//
// A Fetch of k has one linearization point and either of two outcomes:
//
//   - the block returned, nothing made (the fast path's hit): only where k is
//     in the blockstore and no subscription wants k, and the Fetch changes
//     nothing, delivers nothing and cancels nothing (linState.fetchHit);
//   - a request returned (a miss, or the general path, NewRequest and
//     Subscribe(k)): exactly a Subscribe of k by the client's slot
//     (linState.step), so the request either received the block inside the
//     Fetch, where k was stored, and wants nothing, or wants k.
//
// A failed Get makes the Fetch return its error having changed nothing, as
// for the other operations that call the blockstore (linModel). What the
// call returned beyond that is checked as it returns: a block xor a request
// unless it failed, the block of k, and newFunc called once for a request,
// never for a block, at most once for an error; a violation is recorded in
// the result (linFetchedWrong, linFetchedNewFunc), which no step accepts.

// linFetched is what a Fetch returned.
type linFetched uint8

const (
	linFetchedNothing linFetched = iota // not a Fetch, or it failed
	linFetchedBlock                     // the block, and no request
	linFetchedRequest                   // a request (what it received is in linOut.msgs)
	linFetchedWrong                     // both or neither of block and request without an error, or a wrong block
	linFetchedNewFunc                   // newFunc called a wrong number of times
)

func (f linFetched) String() string {
	return [...]string{
		"fetched nothing", "fetched the block", "fetched a request",
		"fetched a wrong result!", "newFunc called wrongly!",
	}[f]
}

// linReqSlot is the model's subscription slot of client c's request.
func linReqSlot(c int) int { return linSubs + c }

// slotName names a slot: s0.. the sessions' subscriptions, r0.. the clients'
// requests.
func slotName(s int) string {
	if s < linSubs {
		return "s" + strconv.Itoa(s)
	}
	return "r" + strconv.Itoa(s-linSubs)
}

// fetchHit reports whether a Fetch, in, may return the block with result out
// in st, changing nothing: its key is stored and nobody wants it.
func (st linState) fetchHit(in linIn, out linOut) bool {
	return in.keys&(st.stored|st.unsure|in.gcRace) != 0 && in.keys&st.wanted() == 0 && out == linOut{fetched: linFetchedBlock}
}

// remove ends every want of slot s and returns the keys nobody wants any more.
func (st linState) remove(s int) (linState, keySet) {
	var cancels keySet
	for k := range linKeys {
		if st.wants[k]&(1<<s) != 0 {
			st.wants[k] &^= 1 << s
			if st.wants[k] == 0 {
				cancels |= 1 << k
			}
		}
	}
	return st, cancels
}

// linClient is one client of a round: its view of the Notifier and the
// request its last Fetch returned, until it removes it.
type linClient struct {
	n       *notifier.Notifier
	bs      blockstore.Blockstore
	subs    []*notifier.Subscription
	rec     *linRecorder
	slot    int                    // linReqSlot of the client
	pending *notifier.Subscription // the request of the last Fetch, not removed yet
	readSub int                    // linTuned: 1 + the session whose wants the client read last, 0 if none
}

// next draws the client's next operation: the Remove of its pending request
// half the time, and always instead of another Fetch or as the last
// operation (last: only that, if any; ok false if none).
func (cl *linClient) next(rng *rand.Rand, mode linMode, last bool) (in linIn, ok bool) {
	gc := mode == linGC
	if last {
		return linIn{kind: linRemove, sub: cl.slot, ordered: !gc}, cl.pending != nil
	}
	if mode == linTuned {
		in = cl.randomTunedIn(rng)
	} else {
		in = randomLinIn(rng, gc)
	}
	in.ordered = !gc
	if cl.pending != nil && (in.kind == linFetch || rng.IntN(2) == 0) {
		return linIn{kind: linRemove, sub: cl.slot, ordered: !gc}, true
	}
	if in.kind == linFetch {
		in.sub = cl.slot
	}
	return in, true
}

// run runs in, recording in out what Fetch returned.
func (cl *linClient) run(ctx context.Context, in linIn, out *linOut) error {
	switch in.kind {
	case linRemove:
		cl.pending.Remove()
		cl.pending = nil
		return nil
	case linWanted, linWants:
		cl.read(in, out)
		return nil
	case linFetch:
	default:
		return runLinIn(ctx, cl.n, cl.bs, cl.subs, in)
	}
	want := linBlocks[keyIndex(in.keys)]
	var made atomic.Int32
	slot := cl.slot
	blk, req, err := cl.n.Fetch(ctx, want.Cid(), func() func(notifier.ResponseMessage) {
		made.Add(1)
		return func(m notifier.ResponseMessage) { cl.rec.onMessage(slot, m) }
	})
	calls := made.Load()
	switch {
	case err != nil:
		if blk != nil || req != nil {
			out.fetched = linFetchedWrong
		} else if calls > 1 {
			out.fetched = linFetchedNewFunc
		}
	case blk != nil && req == nil:
		out.fetched = linFetchedBlock
		if blk.Cid() != want.Cid() || !bytes.Equal(blk.RawData(), want.RawData()) {
			out.fetched = linFetchedWrong
		} else if calls != 0 {
			out.fetched = linFetchedNewFunc
		}
	case req != nil && blk == nil:
		out.fetched = linFetchedRequest
		cl.pending = req
		if req.ID() != 0 {
			out.fetched = linFetchedWrong
		} else if calls != 1 {
			out.fetched = linFetchedNewFunc
		}
	default:
		out.fetched = linFetchedWrong
		if req != nil {
			cl.pending = req
		}
	}
	return err
}

// keyIndex is the index of the one key of s.
func keyIndex(s keySet) int {
	for k := range linKeys {
		if s&(1<<k) != 0 {
			return k
		}
	}
	panic("no key")
}

// markOverlaps notes, in each Publish, Subscribe and Fetch of history, the
// operations during its call that the model must allow for.
//
// Drops: the request slots whose Remove overlaps the operation in real
// time, whose message from it may be missing. An operation that delivers takes effect before its
// hand-over (a Publish at its PutMany, which a Remove of a key it reserves
// waits for, but not for the hand-over), and Remove drops the messages its
// subscription has not received yet (Subscription.Remove): so a Remove that
// takes effect between the two ends the request with the message undelivered,
// though the operation that ended its want of the block's key came first and
// reports the key's cancel. Overlap is the only case: an operation that
// returned before the Remove was called has handed over, and one called
// after the Remove returned sees no want of the request. The rest of the
// result, the cancels included, is checked as always.
//
// Collections (gcRace): the keys that a garbage collection deleted during the
// operation's call. The operation may have read or written such a key's
// block before the delete and committed after it: the Notifier's reservations keep out the writers
// that go through it, not a garbage collection (doc.go). The model then
// cannot know whether the key is stored, either in the operation's step or
// after it (linState.unsure):
//   - a Subscribe's or Fetch's hit of the key is what the call saw, and
//     the key stays unsure after it;
//   - a Publish that wrote the key leaves it unsure: its PutMany may have
//     come before the delete, and its commit after an operation that came
//     after the delete (as in a history of CI on 6ef58c2: s1's want of k2,
//     still there for a Subscribe of s1 after DeleteBlock[k2], ended by a
//     Publish of k2 whose block a later Subscribe of s0 did not find).
//
// A later operation that reads an unsure key, with no collection during its
// call, sees the blockstore as it is at its commit and settles the key.
func markOverlaps(history []porcupine.Operation) []porcupine.Operation {
	for i := range history {
		op := &history[i]
		in := op.Input.(linIn)
		if in.kind != linPublish && in.kind != linSubscribe && in.kind != linFetch {
			continue
		}
		for _, r := range history {
			if r.Call >= op.Return || op.Call >= r.Return {
				continue
			}
			switch rin := r.Input.(linIn); rin.kind {
			case linRemove:
				in.drops |= 1 << rin.sub
			case linCollect:
				in.gcRace |= rin.keys
			}
		}
		op.Input = in
	}
	return history
}

// wrote is st after in wrote the blocks of keys to the blockstore.
func (st linState) wrote(in linIn, keys keySet) linState {
	st.stored |= keys
	st.unsure = st.unsure&^keys | keys&in.gcRace
	return st
}

// TestLinearizability_GCRaceExcusesOnlyTheKeysDeletedDuringTheCall checks
// markOverlaps' collections on the shape of the history CI found: s1's want of k2 is
// still there after DeleteBlock[k2] (s1's second Subscribe adds nothing), a
// Publish of k2 ends it (a HAVE of k2 after it reaches nobody) and wrote k2
// before the delete, and a later Subscribe of s0 does not find k2. With the
// delete during the Publish's call that is linearizable; with the delete
// before it or after everything, it is not.
func TestLinearizability_GCRaceExcusesOnlyTheKeysDeletedDuringTheCall(t *testing.T) {
	const k2 = keySet(1 << 2)
	hit := linOut{msgs: [linSlots]linMsg{0: {n: 1, blks: k2}}}
	for _, c := range []struct {
		name            string
		delCall, delRet int64
		last            linOut // s0's Subscribe
		want            porcupine.CheckResult
	}{
		{"delete during the Publish, later Subscribe misses", 6, 7, linOut{}, porcupine.Ok},
		{"delete during the Publish, later Subscribe hits", 6, 7, hit, porcupine.Ok},
		{"delete before the Publish, later Subscribe misses", 3, 4, linOut{}, porcupine.Illegal},
		{"delete after everything, later Subscribe misses", 15, 16, linOut{}, porcupine.Illegal},
	} {
		h := markOverlaps([]porcupine.Operation{
			{ClientId: 0, Input: linIn{kind: linSubscribe, sub: 1, keys: k2}, Call: 1, Return: 2, Output: linOut{}},
			{ClientId: 1, Input: linIn{kind: linCollect, keys: k2}, Call: c.delCall, Return: c.delRet, Output: linOut{}},
			{ClientId: 2, Input: linIn{kind: linPublish, blks: k2}, Call: 5, Return: 10, Output: linOut{
				msgs: [linSlots]linMsg{1: {n: 1, blks: k2}}, cancels: k2,
			}},
			{ClientId: 0, Input: linIn{kind: linSubscribe, sub: 1, keys: k2}, Call: 8, Return: 9, Output: linOut{}},
			{ClientId: 0, Input: linIn{kind: linPublish, remote: true, haves: k2}, Call: 11, Return: 12, Output: linOut{}},
			{ClientId: 0, Input: linIn{kind: linSubscribe, sub: 0, keys: k2}, Call: 13, Return: 14, Output: c.last},
		})
		if res := porcupine.CheckOperationsTimeout(linModel, h, time.Second); res != c.want {
			t.Errorf("%s: checker says %v, want %v", c.name, res, c.want)
		}
	}
}
