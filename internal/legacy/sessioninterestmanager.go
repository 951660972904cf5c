package legacy

import (
	"slices"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// SessionInterestManager records which session wants which CID, as boxo's
// sessioninterestmanager does. boxo v0.43.0 keeps a set of sessions per CID
// (map[uint64]struct{}); the wanted-versus-interested bool of older versions is
// gone there, so it is gone here.
//
// All methods are safe for concurrent use and never block on anything but the
// one lock. It knows nothing of the PubSub: keeping the two in step is the
// caller's job, done in separate steps, which is the design being measured.
type SessionInterestManager struct {
	mu sync.RWMutex
	// wants maps a CID to the sessions that want it; guarded by mu.
	// Invariant: no set is empty (a CID nobody wants has no entry).
	wants map[cid.Cid]map[uint64]struct{}
}

// NewSessionInterestManager returns an empty SessionInterestManager. It does
// not block and starts no goroutine.
func NewSessionInterestManager() *SessionInterestManager {
	return &SessionInterestManager{wants: make(map[cid.Cid]map[uint64]struct{})}
}

// RecordSessionInterest records that session ses wants ks. It is safe for
// concurrent use and blocks only on the write lock.
func (m *SessionInterestManager) RecordSessionInterest(ses uint64, ks []cid.Cid) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range ks {
		set, ok := m.wants[c]
		if !ok {
			set = make(map[uint64]struct{}, 1)
			m.wants[c] = set
		}
		set[ses] = struct{}{}
	}
}

// RemoveSession ends every want of session ses and returns the CIDs that no
// session wants any more. Like boxo it has no reverse index: it visits every
// CID that any session wants, under the write lock, so its cost grows with the
// whole map rather than with the session. It is safe for concurrent use and
// blocks only on the write lock.
func (m *SessionInterestManager) RemoveSession(ses uint64) []cid.Cid {
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone []cid.Cid
	for c, set := range m.wants {
		delete(set, ses)
		if len(set) == 0 {
			delete(m.wants, c)
			gone = append(gone, c)
		}
	}
	return gone
}

// RemoveSessionWants ends session ses's wants for ks and returns those of ks
// that no session wants any more. It is safe for concurrent use and blocks
// only on the write lock.
func (m *SessionInterestManager) RemoveSessionWants(ses uint64, ks []cid.Cid) []cid.Cid {
	m.mu.Lock()
	defer m.mu.Unlock()
	gone := make([]cid.Cid, 0, len(ks))
	for _, c := range ks {
		set, ok := m.wants[c]
		if !ok {
			continue
		}
		delete(set, ses)
		if len(set) == 0 {
			delete(m.wants, c)
			gone = append(gone, c)
		}
	}
	return gone
}

// FilterSessionInterested returns, for each of ksets, a new slice of the keys
// that session ses wants, in order; a set with none of them yields nil. It is
// safe for concurrent use and blocks only on the read lock.
func (m *SessionInterestManager) FilterSessionInterested(ses uint64, ksets ...[]cid.Cid) [][]cid.Cid {
	res := make([][]cid.Cid, len(ksets))
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i, ks := range ksets {
		var kept []cid.Cid
		for _, c := range ks {
			if _, ok := m.wants[c][ses]; ok {
				kept = append(kept, c)
			}
		}
		res[i] = kept
	}
	return res
}

// SplitWantedUnwanted splits blks into the blocks that some session wants and
// the rest, keeping their order. It is safe for concurrent use and blocks only
// on the read lock.
//
// The wanted set is built as boxo builds it, visiting every session that wants
// each block and adding the CID to a cid.Set once per session: the cost grows
// with the number of sessions sharing a key, and it is part of the baseline.
func (m *SessionInterestManager) SplitWantedUnwanted(blks []blocks.Block) (wanted, unwanted []blocks.Block) {
	wantedKs := cid.NewSet()
	m.mu.RLock()
	for _, b := range blks {
		c := b.Cid()
		for ses := range m.wants[c] {
			if _, ok := m.wants[c][ses]; ok {
				wantedKs.Add(c)
			}
		}
	}
	m.mu.RUnlock()

	wanted = make([]blocks.Block, 0, len(blks))
	for _, b := range blks {
		if wantedKs.Has(b.Cid()) {
			wanted = append(wanted, b)
		} else {
			unwanted = append(unwanted, b)
		}
	}
	return wanted, unwanted
}

// InterestedSessions returns, in no particular order and without duplicates,
// the sessions that want any key of keySets. It is safe for concurrent use and
// blocks only on the read lock.
func (m *SessionInterestManager) InterestedSessions(keySets ...[]cid.Cid) []uint64 {
	seen := make(map[uint64]struct{})
	m.mu.RLock()
	for _, ks := range keySets {
		for _, c := range ks {
			for ses := range m.wants[c] {
				seen[ses] = struct{}{}
			}
		}
	}
	m.mu.RUnlock()

	out := make([]uint64, 0, len(seen))
	for ses := range seen {
		out = append(out, ses)
	}
	return out
}

// FilterInterests removes from each of keySets, in place, the keys that no
// session wants, and returns keySets with the shortened slices. The callers'
// backing arrays are overwritten: pass copies to keep the originals. It is safe
// for concurrent use (on distinct slices) and blocks only on the read lock.
func (m *SessionInterestManager) FilterInterests(keySets ...[]cid.Cid) [][]cid.Cid {
	m.mu.RLock()
	defer m.mu.RUnlock()
	unwanted := func(c cid.Cid) bool {
		_, ok := m.wants[c]
		return !ok
	}
	for i, ks := range keySets {
		keySets[i] = slices.DeleteFunc(ks, unwanted)
	}
	return keySets
}

// Size returns the number of CIDs that some session wants and the number of
// (session, CID) wants. It is safe for concurrent use, blocks only on the read
// lock, and visits every CID.
func (m *SessionInterestManager) Size() (keys, pairs int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, set := range m.wants {
		pairs += len(set)
	}
	return len(m.wants), pairs
}
