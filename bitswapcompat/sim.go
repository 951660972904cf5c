package bitswapcompat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/shrink"
)

// SessionInterestManager records which session is interested in which CID,
// with the method set of boxo's sessioninterestmanager. Each session is an
// interest subscription of the Notifier (Notifier.NewInterest): its wants
// outlive the delivery of their blocks, as boxo's interests do, and every
// query is answered by the Notifier's own index: under its shard locks, or
// for FilterSessionInterested under the session's own lock. Built
// by New, the Notifier is the PubSub's, so a block that a session wants is
// stored and delivered like one a request waits for. Any uint64 is a valid
// session ID. All methods are safe for concurrent use.
type SessionInterestManager struct {
	n           *notifier.Notifier
	onErr       func(error)
	cancelsSent bool // the Notifier has a cancel function: CANCELs go there, not to Remove* results

	// mu guards sessions and peak. Nothing that waits is called while it is held:
	// only NewInterest, which takes the Notifier's registry lock briefly,
	// and Subscription.Err, which takes the subscription's lock briefly;
	// neither ever waits for mu.
	mu       sync.Mutex
	sessions map[uint64]*simSession
	peak     shrink.Peak // of sessions, which gives back the storage of a burst of sessions (shrink.Fit)
}

// simSession is a session's interest subscription. While RemoveSession ends
// it, leaving is open and the entry stays, so that a RecordSessionInterest of
// the same ID waits for the ID to be free instead of colliding with it.
type simSession struct {
	sub     *notifier.Subscription
	leaving chan struct{} // nil, or closed once RemoveSession has ended sub
}

func newSessionInterestManager(n *notifier.Notifier, cfg config) *SessionInterestManager {
	return &SessionInterestManager{
		n:           n,
		onErr:       cfg.onErr,
		cancelsSent: n.HasCancelFunc(), // WithCancelFunc, or notifier.WithCancelFunc given to New
		sessions:    make(map[uint64]*simSession),
	}
}

// session returns the subscription of session ses, creating it. If
// RemoveSession is ending the session, it waits for that first.
func (sim *SessionInterestManager) session(ses uint64) (*notifier.Subscription, error) {
	for {
		sim.mu.Lock()
		e := sim.sessions[ses]
		if e == nil {
			break
		}
		if e.leaving == nil {
			sim.mu.Unlock()
			return e.sub, nil
		}
		sim.mu.Unlock()
		<-e.leaving
	}
	defer sim.mu.Unlock()
	sub, err := sim.n.NewInterest(ses)
	if err != nil {
		return nil, err
	}
	sim.sessions[ses] = &simSession{sub: sub}
	sim.peak.Grew(len(sim.sessions))
	return sub, nil
}

// lookup returns the subscription of session ses, or nil if there is none.
// While RemoveSession ends it, it is returned all the same: until ReleaseAll
// takes effect the Notifier still records its interests, and it answers for
// them (AppendWanted and Release are ordered with ReleaseAll by the
// subscription's and the shards' locks, so each key is freed once). Treating
// a leaving session as gone answered from this manager's flag instead, before
// the removal took effect: found by review,
// TestSessionQueries_DuringRemoveSessionAgreeWithTheNotifier.
func (sim *SessionInterestManager) lookup(ses uint64) *notifier.Subscription {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if e := sim.sessions[ses]; e != nil {
		return e.sub
	}
	return nil
}

// RecordSessionInterest records that session ses is interested in ks; keys it
// is interested in already are ignored. The interest lasts until
// RemoveSessionWants or RemoveSession, whether or not the block arrives. It
// is safe for concurrent use and blocks only for operations on the same
// shards of the Notifier, for an operation whose blockstore call holds a
// reservation on one of ks that the session does not want yet (a Publish
// storing that key's block: its PutMany), and, while RemoveSession ends
// the same session ID, for that removal, which may wait for a blockstore
// call on one of the session's keys: the ID is free again only once the
// removal has taken effect. After Shutdown it records nothing.
//
// An undefined CID in ks is not recorded: no block has one, and the Notifier
// cannot index it. The other keys are, and WithErrorFunc's function gets an
// error that wraps notifier.ErrInvalidCid and names the session and the first
// such index. It does not panic: boxo's session calls it from its own
// goroutine with the keys of a GetBlocks, so a caller's cid.Undef would stop
// the node, where boxo's records the key. It panics if ses belongs to a
// subscription made directly on the Notifier (a native session, see
// NotifierOf).
func (sim *SessionInterestManager) RecordSessionInterest(ses uint64, ks []cid.Cid) {
	if i := slices.IndexFunc(ks, func(k cid.Cid) bool { return !k.Defined() }); i >= 0 {
		report(context.Background(), sim.onErr, fmt.Errorf("bitswapcompat: RecordSessionInterest(%d): ks[%d]: %w", ses, i, notifier.ErrInvalidCid))
		ks = slices.DeleteFunc(slices.Clone(ks), func(k cid.Cid) bool { return !k.Defined() })
	}
	if len(ks) == 0 {
		return
	}
	for {
		sub, err := sim.session(ses)
		if errors.Is(err, notifier.ErrDuplicateSession) {
			panic(fmt.Sprintf("bitswapcompat: session %d is subscribed to the Notifier outside the SessionInterestManager", ses))
		}
		if err == nil {
			err = sub.Subscribe(context.Background(), ks...)
			if errors.Is(err, notifier.ErrClosed) && sim.forget(ses, sub) {
				continue // a concurrent RemoveSession ended sub: the session starts anew
			}
		}
		report(context.Background(), sim.onErr, err)
		return
	}
}

// forget removes sub, whose Subscribe was refused with ErrClosed, from
// sessions if it is still there, and reports whether the caller should make
// the session anew: sub was ended by a Remove, not by Close. While Close
// runs, it may refuse the Subscribe before it ends sub: forget then reports
// true, and the caller's next NewInterest returns ErrClosed, one round later.
func (sim *SessionInterestManager) forget(ses uint64, sub *notifier.Subscription) bool {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	if e := sim.sessions[ses]; e != nil && e.sub == sub && e.leaving == nil {
		delete(sim.sessions, ses)
		sim.sessions = shrink.Fit(sim.sessions, &sim.peak)
	}
	return sub.Err() == nil // ended by Remove, not by Close
}

// RemoveSession ends every interest of session ses and returns the keys that
// no session is interested in any more, for the caller to CANCEL, as boxo's
// does. A PubSub call still waiting for such a key does not hold it back:
// the CANCEL goes out as it does in boxo, and the call still gets the block
// if it arrives. With WithCancelFunc (or notifier.WithCancelFunc given to
// New) it returns nil: the Notifier reports the keys that nobody, request or
// session, wants any more to that function. The
// session ID may be used again once it has returned. It is safe for
// concurrent use and blocks only for operations on the session's shards,
// and for an operation whose blockstore call holds a reservation on one of
// the session's keys (a Publish storing its block), until that call returns.
// After Shutdown it returns nil, and so may a call made while Shutdown runs
// (the session's keys then go to the cancel function alone, if one is set).
// A call while another RemoveSession of ses
// is under way returns nil once that one has taken effect, as it would
// after waiting for boxo's lock: the ID, and every key that the first
// freed, are let go of by then. Returning at once, the tempting shortcut,
// let a caller see ses interested in its keys after its RemoveSession had
// returned (review, TestRemoveSession_SecondWaitsForTheFirst). So, as for
// every method, not from the cancel function or a BlockWrapper: a second
// RemoveSession of a session there would wait for the first, which waits
// for it.
func (sim *SessionInterestManager) RemoveSession(ses uint64) []cid.Cid {
	sim.mu.Lock()
	e := sim.sessions[ses]
	if e == nil {
		sim.mu.Unlock()
		return nil
	}
	if leaving := e.leaving; leaving != nil { // a concurrent RemoveSession ends it
		sim.mu.Unlock()
		<-leaving
		return nil
	}
	e.leaving = make(chan struct{})
	sim.mu.Unlock()
	// Without sim.mu: ReleaseAll may wait for a blockstore call on one of the
	// session's keys, which must not hold up the other sessions.
	defer func() { // deferred: also if the cancel function panics in ReleaseAll, which has finished then
		sim.mu.Lock()
		delete(sim.sessions, ses)
		sim.sessions = shrink.Fit(sim.sessions, &sim.peak)
		sim.mu.Unlock()
		close(e.leaving)
	}()
	return sim.cancels(e.sub.ReleaseAll())
}

// RemoveSessionWants ends the interest of session ses in ks and returns the
// keys among them that no session is interested in any more, in the order of
// ks, as RemoveSession does. Each key is returned by the one call that ended
// its last interest, never later. It is safe for concurrent use and blocks
// only for operations on the same shards, and for an operation whose
// blockstore call holds a reservation on one of ks that the session wants
// (a Publish storing its block), until that call returns. Like boxo's, it
// never returns nil: an empty answer is an empty slice.
func (sim *SessionInterestManager) RemoveSessionWants(ses uint64, ks []cid.Cid) []cid.Cid {
	var free []cid.Cid
	if sub := sim.lookup(ses); sub != nil {
		free = sim.cancels(sub.Release(ks...))
	}
	if free == nil {
		return []cid.Cid{} // boxo's is never nil; a caller may test for it
	}
	return free
}

// cancels returns free, or nil if CANCELs go to the cancel function.
func (sim *SessionInterestManager) cancels(free []cid.Cid) []cid.Cid {
	if sim.cancelsSent {
		return nil
	}
	return free
}

// FilterSessionInterested returns, for each of ksets, in order, a new slice of
// the keys that session ses is interested in. It is safe for concurrent use
// and takes only the session's own lock, once (Subscription.AppendWanted):
// every set is read at the same instant, as boxo reads them under one lock.
//
// One AppendWanted per set, the tempting form, read each set at its own
// instant: while the session recorded and let go of a key, a call whose sets
// both held it (boxo's Session.ReceiveFrom passes a message's blocks, HAVEs
// and DONT_HAVEs in one call) could find it wanted in one and not in the
// other (review, TestFilterSessionInterested_ReadsEverySetAtOneInstant).
func (sim *SessionInterestManager) FilterSessionInterested(ses uint64, ksets ...[]cid.Cid) [][]cid.Cid {
	res := make([][]cid.Cid, len(ksets))
	sub := sim.lookup(ses)
	if sub == nil {
		return res
	}
	if len(ksets) == 1 {
		res[0] = sub.AppendWanted(nil, ksets[0])
		return res
	}
	total := 0
	for _, ks := range ksets {
		total += len(ks)
	}
	var buf [64]cid.Cid // the sets, one after the other: on the stack, for a message of up to 64 keys
	all := buf[:0]
	if total > len(buf) {
		all = make([]cid.Cid, 0, total)
	}
	for _, ks := range ksets {
		all = append(all, ks...)
	}
	splitRuns(res, ksets, sub.AppendWanted(make([]cid.Cid, 0, total), all))
	return res
}

// splitRuns sets res[i] to the keys of ksets[i] that are in wanted, the
// subsequence of the sets' keys, one set after the other, in order and with
// repeats, that a session wants. A key is wanted at every place or at none,
// so each key of the sets, in turn, is wanted exactly when it is the next of
// wanted, and the keys of each set are a run of wanted: its answer, capped
// so that appending to it cannot overwrite the next set's.
func splitRuns(res, ksets [][]cid.Cid, wanted []cid.Cid) {
	next := 0
	for i, ks := range ksets {
		from := next
		for _, k := range ks {
			if next < len(wanted) && wanted[next] == k {
				next++
			}
		}
		if next > from {
			res[i] = wanted[from:next:next]
		}
	}
}

// SplitWantedUnwanted splits blks, keeping their order, into the blocks that
// a session is interested in or a PubSub call waits for, and the others.
// With New, the PubSub's calls count, so a request whose session has not
// recorded its interest yet, or whose session let go of the key while the
// request still waits, gets its block. It is safe for concurrent use and
// takes one shard lock of the Notifier per block, so each block is read at
// its own instant: while a session records or lets go of a key, a message
// that carries its block twice can have one copy wanted and the other not
// (boxo reads all under one lock). A nil block panics with a
// "bitswapcompat:" message (boxo's panics on it too), and so does a block
// with an undefined CID, which no peer can send (boxo's calls it unwanted).
func (sim *SessionInterestManager) SplitWantedUnwanted(blks []blocks.Block) (wanted, unwanted []blocks.Block) {
	mustBeUsable("SplitWantedUnwanted", blks)
	wanted = make([]blocks.Block, 0, len(blks))
	for _, b := range blks {
		if sim.n.Wanted(b.Cid()) {
			wanted = append(wanted, b)
		} else {
			unwanted = append(unwanted, b)
		}
	}
	return wanted, unwanted
}

// InterestedSessions returns, each once and in no particular order, the
// sessions interested in any key of keySets. It is safe for concurrent use
// and takes one shard lock of the Notifier per key, so each key is read at
// its own instant: a session that records one key and then lets go of
// another during the call may be missed for both (boxo reads all under one
// lock). boxo's client uses the answer key by key, and a session that is
// interested in a key for the whole call is always found. Like boxo's, it
// never returns nil.
func (sim *SessionInterestManager) InterestedSessions(keySets ...[]cid.Cid) []uint64 {
	var ids []uint64
	for _, ks := range keySets {
		for _, k := range ks {
			ids = sim.n.AppendInterested(ids, k)
		}
	}
	if ids == nil {
		return []uint64{} // boxo's is never nil; a caller may test for it
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// FilterInterests keeps, in each of keySets and in order, only the keys that
// some session is interested in. It filters in place: the slices' contents
// change (and the tail past the new length is zeroed); it returns keySets. It
// is safe for concurrent use provided no one else uses those slices, and
// takes one shard lock of the Notifier per key, so each key is read at its
// own instant, as in InterestedSessions.
func (sim *SessionInterestManager) FilterInterests(keySets ...[]cid.Cid) [][]cid.Cid {
	for i, ks := range keySets {
		keySets[i] = slices.DeleteFunc(ks, func(k cid.Cid) bool { return !sim.n.Interested(k) })
	}
	return keySets
}
