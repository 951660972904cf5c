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
	t         *testing.T
	ctx       context.Context
	withStore bool
	ps        *PubSub
	sim       *SessionInterestManager
	pool      []blocks.Block
	store     *faultyStore
	stored    map[cid.Cid]bool
	sessions  map[uint64]map[cid.Cid]bool
	calls     []*compatCall
	failing   bool
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
	m := &compatModel{t: t, ctx: t.Context(), withStore: withStore, stored: map[cid.Cid]bool{}, sessions: map[uint64]map[cid.Cid]bool{}}
	if withStore {
		m.store = memStore()
		m.ps, m.sim = New(m.store)
	} else {
		m.ps, m.sim = New(nil)
	}
	m.pool = newBlocks(t, compatPool)
	for i := 0; i+2 < len(in); i += 3 {
		op, a, mask := in[i]%9, in[i+1], in[i+2]%(1<<compatPool)
		blks, keys := m.pick(mask)
		got := map[*compatCall][]cid.Cid{} // what each call must have received in this step
		if !m.step(op, a, blks, keys, got) {
			continue
		}
		synctest.Wait()
		m.check(t, got, i/3)
	}
	m.ps.Shutdown()
	synctest.Wait()
	for i, c := range m.calls {
		_, closed := drainNow(c.ch)
		require.True(t, closed, "call %d: channel open after Shutdown", i)
	}
	requireIdle(t, m.ps, m.sim)
}

// step takes step op, with argument a, on the blocks blks (keys), on the
// PubSub and in the model; got is what each call must receive. It reports
// false if the step does nothing, and then the check is skipped.
func (m *compatModel) step(op, a byte, blks []blocks.Block, keys []cid.Cid, got map[*compatCall][]cid.Cid) bool {
	switch op {
	case 0:
		return m.call(a, keys, got)
	case 1: // a call's ctx ends
		if len(m.calls) == 0 {
			return false
		}
		c := m.calls[int(a)%len(m.calls)]
		c.cancel()
		c.closed = true
	case 2:
		return m.publish(a, blks, keys, got)
	case 3: // the disk fails, or recovers
		if !m.withStore {
			return false
		}
		m.failing = a%2 == 1
		m.store.failPut.Store(m.failing)
	case 4:
		return m.record(uint64(a%3), keys)
	case 5:
		m.removeWants(uint64(a%3), keys)
	case 6:
		m.removeSession(uint64(a % 3))
	case 7:
		m.split(blks, keys)
	case 8: // a garbage collection deletes blocks
		if !m.withStore {
			return false
		}
		for _, k := range keys {
			delete(m.stored, k)
			require.NoError(m.t, m.store.DeleteBlock(m.ctx, k))
		}
	}
	return true
}

// call is a call, as AsyncGetBlocks makes it.
func (m *compatModel) call(a byte, keys []cid.Cid, got map[*compatCall][]cid.Cid) bool {
	if len(keys) == 0 {
		return false
	}
	cctx, cancel := context.WithCancel(m.ctx)
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
	c.ch = m.ps.Subscribe(cctx, keys...)
	m.calls = append(m.calls, c)
	return true
}

// publish is a Publish, from a peer or locally (NotifyNewBlocks).
func (m *compatModel) publish(a byte, blks []blocks.Block, keys []cid.Cid, got map[*compatCall][]cid.Cid) bool {
	if len(blks) == 0 {
		return false
	}
	remote := a%2 == 1
	var toStore []blocks.Block
	for _, b := range blks {
		if !remote || m.wanted(b.Cid()) {
			toStore = append(toStore, b)
		}
	}
	if !m.withStore { // notify only: every block goes to the calls that wait for it
		toStore = blks
	}
	from := peer.ID("")
	if remote {
		from = peerA
	}
	if len(toStore) > 0 && m.failing {
		m.failCalls(keys)
	} else {
		for _, b := range toStore {
			m.stored[b.Cid()] = m.withStore
			m.deliver(b, got)
		}
	}
	m.ps.Publish(from, blks...)
	return true
}

// failCalls ends the calls waiting for any of keys, whose store failed.
func (m *compatModel) failCalls(keys []cid.Cid) {
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
}

// record: session ses records its interest in keys.
func (m *compatModel) record(ses uint64, keys []cid.Cid) bool {
	if len(keys) == 0 {
		return false
	}
	if m.sessions[ses] == nil {
		m.sessions[ses] = map[cid.Cid]bool{}
	}
	for _, k := range keys {
		m.sessions[ses][k] = true
	}
	m.sim.RecordSessionInterest(ses, keys)
	return true
}

// removeWants: session ses lets go of keys; the ones no session wants any
// more come back.
func (m *compatModel) removeWants(ses uint64, keys []cid.Cid) {
	var freed []cid.Cid
	for _, k := range keys {
		if m.sessions[ses][k] {
			delete(m.sessions[ses], k)
			if !m.sessionWanted(k) {
				freed = append(freed, k)
			}
		}
	}
	require.ElementsMatch(m.t, freed, m.sim.RemoveSessionWants(ses, keys), "RemoveSessionWants(%d, %v)", ses, keys)
}

// removeSession: session ses ends.
func (m *compatModel) removeSession(ses uint64) {
	held := m.sessions[ses]
	delete(m.sessions, ses)
	var freed []cid.Cid
	for k := range held {
		if !m.sessionWanted(k) {
			freed = append(freed, k)
		}
	}
	require.ElementsMatch(m.t, freed, m.sim.RemoveSession(ses), "RemoveSession(%d)", ses)
}

// split: the client splits a message's blocks.
func (m *compatModel) split(blks []blocks.Block, keys []cid.Cid) {
	want := []cid.Cid{}
	for _, k := range keys {
		if m.wanted(k) {
			want = append(want, k)
		}
	}
	wanted, unwanted := m.sim.SplitWantedUnwanted(blks)
	require.Equal(m.t, want, cidsOf(wanted...), "SplitWantedUnwanted: wanted")
	require.Len(m.t, unwanted, len(blks)-len(want), "SplitWantedUnwanted: unwanted")
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
