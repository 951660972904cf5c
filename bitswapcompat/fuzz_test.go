package bitswapcompat

import (
	"context"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// FuzzCompatModel drives the store wiring (New on a blockstore whose PutMany
// can be made to fail), or the shared one (New(nil): notify only, as the
// first byte of the input says), as boxo's client drives it, one call at a time, and
// checks every result against compatModel, boxo's semantics as MIGRATION.md
// states them for this wiring: PubSub calls (Subscribe, their ctx, every
// block once, the channel closed when all have come), Publish from a peer or
// locally (stored first; a peer's block only if a call or a session wants
// it; a failed store delivers nothing and ends the calls waiting for any
// block of the message), the session manager's record, remove and split,
// and a garbage collection of the blockstore. Each step runs in a synctest
// bubble and is waited for (synctest.Wait), so a ctx's end and the pacing's
// sleeps have taken effect before the check; Shutdown at the end must close
// every channel and leave nothing behind.
func FuzzCompatModel(f *testing.F) {
	// The wiring (even: store, odd: shared), then steps, each a triple: the
	// step (% 9, see runCompatModel), an argument, a mask of the blocks of
	// the pool.
	f.Add([]byte{0, 0, 0, 3, 2, 1, 1, 2, 1, 2})                                                       // a call of two blocks, published one by one from a peer
	f.Add([]byte{0, 0, 0, 1, 4, 1, 3, 3, 1, 0, 7, 0, 3, 2, 1, 1, 3, 0, 0, 0, 0, 1, 2, 1, 1, 5, 1, 3}) // a failed store ends the call; asked again, it gets the block
	f.Add([]byte{0, 0, 1, 7, 1, 0, 0, 2, 0, 15, 0, 0, 3, 8, 0, 1, 0, 0, 1})                           // ctx ends a call; a local block is stored; a call finds it; gc
	f.Add([]byte{0, 4, 0, 7, 4, 1, 12, 7, 0, 15, 6, 0, 0, 5, 1, 4, 2, 1, 15, 8, 0, 3, 7, 0, 15})      // sessions, split, removal, a peer's blocks, gc
	f.Add([]byte{0, 0, 0, 2, 0, 1, 5, 3, 1, 0, 2, 0, 3, 3, 0, 0, 2, 1, 6, 6, 1, 0})                   // a failed local store ends the calls that wait for any of its blocks
	f.Add([]byte{1, 0, 0, 3, 4, 0, 6, 7, 0, 15, 2, 1, 1, 2, 0, 2, 0, 0, 1, 6, 0, 0, 7, 0, 15})        // shared: nothing is stored
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		if len(in) > 1+3*64 {
			in = in[:1+3*64]
		}
		synctest.Test(t, func(t *testing.T) { runCompatModel(t, in[0]%2 == 0, in[1:]) })
	})
}

const compatPool = 4 // blocks the steps choose from, by a bit mask

// compatCall is the model of one PubSub call.
type compatCall struct {
	ch     <-chan blocks.Block
	cancel context.CancelFunc
	want   map[cid.Cid]bool // keys whose block has not come
	closed bool
}

// compatModel is what the store wiring must show.
type compatModel struct {
	pool     []blocks.Block
	store    *faultyStore
	stored   map[cid.Cid]bool
	sessions map[uint64]map[cid.Cid]bool
	calls    []*compatCall
	failing  bool
}

func (m *compatModel) pick(mask byte) (blks []blocks.Block, keys []cid.Cid) {
	for i, b := range m.pool {
		if mask&(1<<i) != 0 {
			blks = append(blks, b)
			keys = append(keys, b.Cid())
		}
	}
	return blks, keys
}

// wanted reports whether a waiting call or a session wants k.
func (m *compatModel) wanted(k cid.Cid) bool {
	for _, c := range m.calls {
		if !c.closed && c.want[k] {
			return true
		}
	}
	for _, s := range m.sessions {
		if s[k] {
			return true
		}
	}
	return false
}

// deliver hands b to the calls waiting for it.
func (m *compatModel) deliver(b blocks.Block, got map[*compatCall][]cid.Cid) {
	for _, c := range m.calls {
		if !c.closed && c.want[b.Cid()] {
			delete(c.want, b.Cid())
			got[c] = append(got[c], b.Cid())
			if len(c.want) == 0 {
				c.closed = true
			}
		}
	}
}

func runCompatModel(t *testing.T, withStore bool, in []byte) {
	var store *faultyStore
	var ps *PubSub
	var sim *SessionInterestManager
	if withStore {
		store = memStore()
		ps, sim = New(store)
	} else {
		ps, sim = New(nil)
	}
	m := &compatModel{store: store, stored: map[cid.Cid]bool{}, sessions: map[uint64]map[cid.Cid]bool{}}
	m.pool = newBlocks(t, compatPool)
	ctx := t.Context()
	for i := 0; i+2 < len(in); i += 3 {
		op, a, mask := in[i]%9, in[i+1], in[i+2]%(1<<compatPool)
		blks, keys := m.pick(mask)
		got := map[*compatCall][]cid.Cid{} // what each call must have received in this step
		switch op {
		case 0: // a call, as AsyncGetBlocks makes it
			if len(keys) == 0 {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			c := &compatCall{cancel: cancel, want: map[cid.Cid]bool{}}
			for _, k := range keys {
				if m.stored[k] {
					got[c] = append(got[c], k)
				} else {
					c.want[k] = true
				}
			}
			c.closed = len(c.want) == 0
			if a%2 == 1 { // the same keys twice: each block once
				keys = append(keys, keys...)
			}
			c.ch = ps.Subscribe(cctx, keys...)
			m.calls = append(m.calls, c)
		case 1: // a call's ctx ends
			if len(m.calls) == 0 {
				continue
			}
			c := m.calls[int(a)%len(m.calls)]
			c.cancel()
			c.closed = true
		case 2: // Publish, from a peer or locally (NotifyNewBlocks)
			if len(blks) == 0 {
				continue
			}
			remote := a%2 == 1
			var toStore []blocks.Block
			for _, b := range blks {
				if !remote || m.wanted(b.Cid()) {
					toStore = append(toStore, b)
				}
			}
			if !withStore { // notify only: every block goes to the calls that wait for it
				toStore = blks
			}
			from := peer.ID("")
			if remote {
				from = peerA
			}
			switch {
			case len(toStore) > 0 && m.failing:
				for _, c := range m.calls {
					if c.closed {
						continue
					}
					for _, k := range keys {
						if c.want[k] {
							c.closed = true
						}
					}
				}
			default:
				for _, b := range toStore {
					m.stored[b.Cid()] = withStore
					m.deliver(b, got)
				}
			}
			ps.Publish(from, blks...)
		case 3: // the disk fails, or recovers
			if !withStore {
				continue
			}
			m.failing = a%2 == 1
			store.failPut.Store(m.failing)
		case 4: // a session records its interest
			ses := uint64(a % 3)
			if len(keys) == 0 {
				continue
			}
			if m.sessions[ses] == nil {
				m.sessions[ses] = map[cid.Cid]bool{}
			}
			for _, k := range keys {
				m.sessions[ses][k] = true
			}
			sim.RecordSessionInterest(ses, keys)
		case 5: // a session lets go of keys: the ones no session wants any more come back
			ses := uint64(a % 3)
			var freed []cid.Cid
			for _, k := range keys {
				if m.sessions[ses][k] {
					delete(m.sessions[ses], k)
					if !m.sessionWanted(k) {
						freed = append(freed, k)
					}
				}
			}
			require.ElementsMatch(t, freed, sim.RemoveSessionWants(ses, keys), "RemoveSessionWants(%d, %v)", ses, keys)
		case 6: // a session ends
			ses := uint64(a % 3)
			held := m.sessions[ses]
			delete(m.sessions, ses)
			var freed []cid.Cid
			for k := range held {
				if !m.sessionWanted(k) {
					freed = append(freed, k)
				}
			}
			require.ElementsMatch(t, freed, sim.RemoveSession(ses), "RemoveSession(%d)", ses)
		case 7: // the client splits a message's blocks
			want := []cid.Cid{}
			for _, k := range keys {
				if m.wanted(k) {
					want = append(want, k)
				}
			}
			wanted, unwanted := sim.SplitWantedUnwanted(blks)
			require.Equal(t, want, cidsOf(wanted...), "SplitWantedUnwanted: wanted")
			require.Len(t, unwanted, len(blks)-len(want), "SplitWantedUnwanted: unwanted")
		case 8: // a garbage collection deletes blocks
			if !withStore {
				continue
			}
			for _, k := range keys {
				delete(m.stored, k)
				require.NoError(t, store.DeleteBlock(ctx, k))
			}
		}
		synctest.Wait()
		m.check(t, got, i/3)
	}
	ps.Shutdown()
	synctest.Wait()
	for i, c := range m.calls {
		_, closed := drainNow(c.ch)
		require.True(t, closed, "call %d: channel open after Shutdown", i)
	}
	requireIdle(t, ps, sim)
}

// sessionWanted reports whether a session wants k.
func (m *compatModel) sessionWanted(k cid.Cid) bool {
	for _, s := range m.sessions {
		if s[k] {
			return true
		}
	}
	return false
}

// check compares every call's channel with the model after step.
func (m *compatModel) check(t *testing.T, got map[*compatCall][]cid.Cid, step int) {
	t.Helper()
	for i, c := range m.calls {
		recv, closed := drainNow(c.ch)
		require.ElementsMatch(t, got[c], cidsOf(recv...), "step %d: call %d received", step, i)
		require.Equal(t, c.closed, closed, "step %d: call %d closed", step, i)
	}
	for _, b := range m.pool {
		if m.store == nil {
			break
		}
		has, err := m.store.Blockstore.Has(context.Background(), b.Cid())
		require.NoError(t, err)
		require.Equal(t, m.stored[b.Cid()], has, "step %d: block %s stored", step, b.Cid())
	}
}
