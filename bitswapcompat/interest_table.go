package bitswapcompat

import (
	"hash/maphash"
	"sync"

	cid "github.com/ipfs/go-cid"
)

// interestTable is the SessionInterestManager's view of the wants that this
// package holds in the Notifier, which has no read API: per key, the sessions
// interested in it and the PubSub calls waiting for it. It is written before
// this package changes a subscription and by the Notifier's delivery
// functions, inside the operation that ends a want, so that after every
// operation it agrees with the Notifier.
//
// Its shard locks are leaves but for dueMu: delivery functions take them
// under the Notifier's locks, so they are never held while calling the
// Notifier.
type interestTable struct {
	seed   maphash.Seed
	owe    bool // compute the CANCELs owed to RemoveSession and RemoveSessionWants
	shards [tableShards]tableShard

	dueMu sync.Mutex // guards due; taken after a shard's mu, never before
	due   []cid.Cid  // owed CANCELs whose last waiting call has ended
}

const tableShards = 64

type tableShard struct {
	mu   sync.Mutex // guards keys
	keys map[cid.Cid]*keyInterest
	_    [40]byte // keep neighbouring shards' locks off one cache line
}

// keyInterest is the interest in one key.
//
// Invariant: it is in the table exactly while sessions is non-empty or calls
// is positive; wanting counts the sessions whose want is live.
type keyInterest struct {
	sessions []sessionInterest // each session once
	wanting  int
	calls    int // PubSub calls waiting for the key's block

	// owed: the last session's interest ended while calls were waiting, so
	// its CANCEL was held back (sending it would starve them); it is due once
	// they are gone.
	owed bool
}

// sessionInterest is one session's interest in a key. wants is true while
// the session's subscription wants the key; the delivery of its block makes
// it false, and the session stays interested (as boxo's SessionInterestManager
// keeps it) until it calls RemoveSessionWants or RemoveSession.
type sessionInterest struct {
	id    uint64
	wants bool
}

// state is a session's interest in a key, for rolling back a record.
type state uint8

const (
	absent   state = iota
	received       // interested, its block delivered
	wanting
)

func newInterestTable(owe bool) *interestTable {
	t := &interestTable{seed: maphash.MakeSeed(), owe: owe}
	for i := range t.shards {
		t.shards[i].keys = make(map[cid.Cid]*keyInterest)
	}
	return t
}

func (t *interestTable) shard(k cid.Cid) *tableShard {
	return &t.shards[maphash.String(t.seed, k.KeyString())%tableShards]
}

// find returns the index of ses in e.sessions, or -1.
func (e *keyInterest) find(ses uint64) int {
	for i, s := range e.sessions {
		if s.id == ses {
			return i
		}
	}
	return -1
}

// record makes session ses want k and returns its previous state.
func (t *interestTable) record(ses uint64, k cid.Cid) state {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	if e == nil {
		e = &keyInterest{}
		sh.keys[k] = e
	}
	i := e.find(ses)
	switch {
	case i < 0:
		e.sessions = append(e.sessions, sessionInterest{id: ses, wants: true})
	case e.sessions[i].wants:
		return wanting
	default:
		e.sessions[i].wants = true
	}
	e.wanting++
	if i < 0 {
		return absent
	}
	return received
}

// restore takes back a record of k by ses whose subscription failed: no WANT
// was sent for it, so no CANCEL is owed.
func (t *interestTable) restore(ses uint64, k cid.Cid, prev state) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	i := e.find(ses)
	e.wanting--
	if prev == received {
		e.sessions[i].wants = false
		return
	}
	e.sessions = deleteAt(e.sessions, i)
	if len(e.sessions) == 0 && e.calls == 0 {
		delete(sh.keys, k)
	}
}

// delivered records that the block of k reached session ses. A delivery
// function calls it.
func (t *interestTable) delivered(ses uint64, k cid.Cid) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.keys[k]; e != nil {
		if i := e.find(ses); i >= 0 && e.sessions[i].wants {
			e.sessions[i].wants = false
			e.wanting--
		}
	}
}

// release ends the interest of ses in k. It reports whether ses was
// interested, whether its want was still live (the caller must unsubscribe
// it), and whether k is now free: nobody interested, no call waiting. A key
// left to waiting calls only is marked owed.
func (t *interestTable) release(ses uint64, k cid.Cid) (found, live, free bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	if e == nil {
		return false, false, false
	}
	i := e.find(ses)
	if i < 0 {
		return false, false, false
	}
	live = e.sessions[i].wants
	if live {
		e.wanting--
	}
	e.sessions = deleteAt(e.sessions, i)
	if len(e.sessions) > 0 {
		return true, live, false
	}
	if e.calls > 0 {
		e.owed = e.owed || t.owe
		return true, live, false
	}
	delete(sh.keys, k)
	return true, live, true
}

// addCall counts a PubSub call that waits for k.
func (t *interestTable) addCall(k cid.Cid) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	if e == nil {
		e = &keyInterest{}
		sh.keys[k] = e
	}
	e.calls++
}

// endCall uncounts a PubSub call that no longer waits for k. A delivery
// function may call it.
func (t *interestTable) endCall(k cid.Cid) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	e.calls--
	if e.calls > 0 || len(e.sessions) > 0 {
		return
	}
	delete(sh.keys, k)
	if e.owed {
		t.dueMu.Lock() // NOTE: second lock, after the shard's
		t.due = append(t.due, k)
		t.dueMu.Unlock()
	}
}

// takeDue returns the owed CANCELs that are due and still free. A key that a
// call waits for again stays owed; one that a session is interested in again
// is that session's to cancel.
func (t *interestTable) takeDue() []cid.Cid {
	t.dueMu.Lock()
	due := t.due
	t.due = nil
	t.dueMu.Unlock()
	free := due[:0]
	for _, k := range due {
		sh := t.shard(k)
		sh.mu.Lock()
		switch e := sh.keys[k]; {
		case e == nil:
			free = append(free, k)
		case len(e.sessions) == 0:
			e.owed = true
		}
		sh.mu.Unlock()
	}
	return free
}

// wanted reports whether a session's want or a waiting call will take the
// block of k.
func (t *interestTable) wanted(k cid.Cid) bool {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	return e != nil && (e.wanting > 0 || e.calls > 0)
}

// interested reports whether some session is interested in k.
func (t *interestTable) interested(k cid.Cid) bool {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	return e != nil && len(e.sessions) > 0
}

// interestedIn reports whether session ses is interested in k.
func (t *interestTable) interestedIn(ses uint64, k cid.Cid) bool {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[k]
	return e != nil && e.find(ses) >= 0
}

// addSessions adds the sessions interested in k to set.
func (t *interestTable) addSessions(k cid.Cid, set map[uint64]struct{}) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.keys[k]; e != nil {
		for _, s := range e.sessions {
			set[s.id] = struct{}{}
		}
	}
}

// size returns the number of keys in the table and of owed CANCELs not yet
// taken, for tests.
func (t *interestTable) size() (keys, due int) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		keys += len(sh.keys)
		sh.mu.Unlock()
	}
	t.dueMu.Lock()
	defer t.dueMu.Unlock()
	return keys, len(t.due)
}

// deleteAt removes s[i], not keeping order, and clears the freed slot.
func deleteAt(s []sessionInterest, i int) []sessionInterest {
	end := len(s) - 1
	s[i] = s[end]
	s[end] = sessionInterest{}
	return s[:end]
}
