package bitswapcompat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	notifier "github.com/bitswapsync/notifier"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// SessionInterestManager records which session is interested in which CID,
// with the method set of boxo's sessioninterestmanager. Built by New, each
// session's wants are a subscription of the PubSub's Notifier, so a block
// that a session wants is stored and delivered like one a request waits for.
// All methods are safe for concurrent use. Operations on one session are
// serialized; queries never wait for them.
type SessionInterestManager struct {
	table       *interestTable
	n           *notifier.Notifier // nil when built alone
	ps          *PubSub            // owns n; reaps the calls a RecordSessionInterest completes
	onErr       func(error)
	cancelsSent bool // WithCancelFunc: CANCELs go there, not to Remove* results

	mu       sync.Mutex // guards sessions; taken after simSession.op, never before
	sessions map[uint64]*simSession
}

// simSession is one session's state.
type simSession struct {
	// op serializes the operations on the session. It is held across calls to
	// the Notifier and is never taken by a callback.
	op   sync.Mutex
	gone bool                   // RemoveSession ran; a new simSession takes the ID
	sub  *notifier.Subscription // nil until the first want; only with a Notifier
	keys map[cid.Cid]struct{}   // keys in which the table lists the session
}

// acquire returns the session ses with its op locked, creating it if create
// is set; nil if it does not exist and create is not set.
func (sim *SessionInterestManager) acquire(ses uint64, create bool) *simSession {
	for {
		sim.mu.Lock()
		s := sim.sessions[ses]
		if s == nil && create {
			s = &simSession{keys: make(map[cid.Cid]struct{})}
			sim.sessions[ses] = s
		}
		sim.mu.Unlock()
		if s == nil {
			return nil
		}
		s.op.Lock()
		if !s.gone {
			return s
		}
		s.op.Unlock()
	}
}

// RecordSessionInterest records that session ses wants ks; keys it already
// wants are ignored, and a key whose block it has already received is wanted
// again. Built by New, the wants are subscribed in the Notifier, which checks
// the blockstore for them (if any) as a Subscribe does. Undefined CIDs are
// skipped. It is safe for concurrent use and blocks only for other operations
// on the session and for the Notifier. After Shutdown it records nothing.
//
// It panics if ses is in the range reserved for PubSub calls (PubSubIDBase and
// up) or belongs to a subscription made directly on the Notifier.
func (sim *SessionInterestManager) RecordSessionInterest(ses uint64, ks []cid.Cid) {
	if ses >= PubSubIDBase {
		panic(fmt.Sprintf("bitswapcompat: session ID %d is in the range reserved for PubSub calls", ses))
	}
	if len(ks) == 0 {
		return
	}
	s := sim.acquire(ses, true)
	defer s.op.Unlock()
	var added []cid.Cid
	var prev []state
	for _, k := range ks {
		if !k.Defined() {
			continue
		}
		if p := sim.table.record(ses, k); p != wanting {
			s.keys[k] = struct{}{}
			added, prev = append(added, k), append(prev, p)
		}
	}
	if len(added) == 0 || sim.n == nil {
		return
	}
	if err := sim.subscribe(ses, s, added); err != nil {
		for i, k := range added {
			sim.table.restore(ses, k, prev[i])
			if prev[i] == absent {
				delete(s.keys, k)
			}
		}
		if errors.Is(err, notifier.ErrDuplicateSession) {
			panic(fmt.Sprintf("bitswapcompat: session %d is subscribed to the Notifier outside the SessionInterestManager", ses))
		}
		report(sim.onErr, err)
	}
}

// subscribe adds keys to the wants of the session's subscription, creating
// it. The caller holds s.op.
func (sim *SessionInterestManager) subscribe(ses uint64, s *simSession, keys []cid.Cid) error {
	if s.sub == nil {
		table := sim.table
		sub, err := sim.n.NewSubscriptionFunc(ses, func(m notifier.ResponseMessage) {
			for _, b := range m.Blocks {
				table.delivered(ses, b.Cid())
			}
		})
		if err != nil {
			return err
		}
		s.sub = sub
	}
	err := s.sub.Subscribe(context.Background(), keys...)
	sim.ps.reap() // the blockstore check may have completed PubSub calls
	return err
}

// RemoveSession ends every interest of session ses and returns the keys that
// no session wants any more (see RemoveSessionWants). The session ID may be
// used again once it has returned. It is safe for concurrent use and blocks
// only for other operations on the session and for the Notifier. After
// Shutdown it still removes what was recorded.
func (sim *SessionInterestManager) RemoveSession(ses uint64) []cid.Cid {
	var free []cid.Cid
	if s := sim.acquire(ses, false); s != nil {
		for k := range s.keys {
			if _, _, f := sim.table.release(ses, k); f {
				free = append(free, k)
			}
		}
		clear(s.keys)
		if s.sub != nil {
			s.sub.Remove()
		}
		s.gone = true
		sim.mu.Lock() // NOTE: second lock, after s.op
		delete(sim.sessions, ses)
		sim.mu.Unlock()
		s.op.Unlock()
	}
	return sim.cancels(free)
}

// RemoveSessionWants ends the interest of session ses in ks and returns the
// keys that no session wants any more, for the caller to CANCEL: keys in ks
// that nobody is interested in and no PubSub call waits for now. A key that a
// call still waits for is held back, as its CANCEL would starve the call; it
// is returned by a later RemoveSession or RemoveSessionWants, of any session,
// once the last such call has ended. With WithCancelFunc both return nil: the
// keys went to that function. It is safe for concurrent use and blocks only
// for other operations on the session and for the Notifier.
func (sim *SessionInterestManager) RemoveSessionWants(ses uint64, ks []cid.Cid) []cid.Cid {
	var free []cid.Cid
	if s := sim.acquire(ses, false); s != nil {
		var live []cid.Cid
		for _, k := range ks {
			found, l, f := sim.table.release(ses, k)
			if !found {
				continue
			}
			delete(s.keys, k)
			if l {
				live = append(live, k)
			}
			if f {
				free = append(free, k)
			}
		}
		if len(live) > 0 && s.sub != nil {
			s.sub.Unsubscribe(live...)
		}
		s.op.Unlock()
	}
	return sim.cancels(free)
}

// cancels returns free with the owed CANCELs that are due, or nil if CANCELs
// go to WithCancelFunc.
func (sim *SessionInterestManager) cancels(free []cid.Cid) []cid.Cid {
	if sim.cancelsSent {
		return nil
	}
	return append(free, sim.table.takeDue()...)
}

// FilterSessionInterested returns, for each of ksets, in order, a new slice of
// the keys that session ses is interested in: it wants them, or has received
// their block and not yet called RemoveSessionWants for them. It is safe for
// concurrent use, does not block on other operations, and keeps working
// after Shutdown.
func (sim *SessionInterestManager) FilterSessionInterested(ses uint64, ksets ...[]cid.Cid) [][]cid.Cid {
	res := make([][]cid.Cid, len(ksets))
	for i, ks := range ksets {
		var in []cid.Cid
		for _, k := range ks {
			if sim.table.interestedIn(ses, k) {
				in = append(in, k)
			}
		}
		res[i] = in
	}
	return res
}

// SplitWantedUnwanted splits blks, keeping their order, into the blocks that
// a session still wants or a PubSub call waits for, and the others (nil
// blocks among them). With New, the PubSub's calls count, so a request whose
// session has not recorded its interest yet still gets its block. It is safe
// for concurrent use, does not block on other operations, and keeps working
// after Shutdown.
func (sim *SessionInterestManager) SplitWantedUnwanted(blks []blocks.Block) (wanted, unwanted []blocks.Block) {
	wanted = make([]blocks.Block, 0, len(blks))
	for _, b := range blks {
		if b != nil && sim.table.wanted(b.Cid()) {
			wanted = append(wanted, b)
		} else {
			unwanted = append(unwanted, b)
		}
	}
	return wanted, unwanted
}

// InterestedSessions returns, each once and in no particular order, the
// sessions interested in any key of keySets. It is safe for concurrent use,
// does not block on other operations, and keeps working after Shutdown.
func (sim *SessionInterestManager) InterestedSessions(keySets ...[]cid.Cid) []uint64 {
	set := make(map[uint64]struct{})
	for _, ks := range keySets {
		for _, k := range ks {
			sim.table.addSessions(k, set)
		}
	}
	ses := make([]uint64, 0, len(set))
	for id := range set {
		ses = append(ses, id)
	}
	return ses
}

// FilterInterests keeps, in each of keySets and in order, only the keys that
// some session is interested in. It filters in place: the slices' contents
// change (and the tail past the new length is zeroed); it returns keySets. It
// is safe for concurrent use provided no one else uses those slices, does not
// block on other operations, and keeps working after Shutdown.
func (sim *SessionInterestManager) FilterInterests(keySets ...[]cid.Cid) [][]cid.Cid {
	for i, ks := range keySets {
		keySets[i] = slices.DeleteFunc(ks, func(k cid.Cid) bool { return !sim.table.interested(k) })
	}
	return keySets
}
