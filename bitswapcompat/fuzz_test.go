package bitswapcompat

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// FuzzCompatModel drives the store wiring (New on a blockstore whose PutMany
// or Get can be made to fail), or the shared one (New(nil): notify only, as
// the first byte of the input says), as boxo's client drives it, one call at
// a time, and checks every result against compatModel, boxo's semantics as
// MIGRATION.md states them for this wiring: PubSub calls (Subscribe, their
// ctx, every block once, the channel closed when all have come), Publish
// from a peer or locally (stored first; a peer's block only if a call or a
// session wants it; a failed store delivers nothing and ends the calls
// waiting for any block of the message), a failed blockstore check (a miss:
// the call waits, and its keys are checked again later, see recheck.go) and
// the time that brings the re-checks, the session manager's record, remove
// and split, and a garbage collection of the blockstore. Each step runs in a
// synctest bubble and is waited for (synctest.Wait), so a ctx's end, the
// pacing's sleeps and the re-checks due have taken effect before the check;
// Shutdown at the end must close every channel and leave nothing behind.
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
	// Gets fail (step 3, a%4 == 2) and the clock moves on (a>>2, see advance).
	f.Add([]byte{0, 2, 0, 1, 3, 2, 0, 0, 0, 3, 3, 14, 0, 3, 6, 0, 3, 28, 0, 3, 4, 0, 2, 1, 2})                            // a stored block unread by the check; the re-check at 100 ms fails, the one at 300 ms delivers it
	f.Add([]byte{0, 2, 0, 1, 3, 2, 0, 0, 0, 1, 0, 0, 3, 2, 1, 1, 3, 240, 0, 2, 1, 2})                                     // a peer's Publish before the re-check: each call gets the block once
	f.Add([]byte{0, 2, 0, 1, 3, 2, 0, 0, 0, 1, 8, 0, 1, 3, 240, 0, 2, 1, 1})                                              // unread, then deleted: the re-check delivers nothing, the call waits for a Publish
	f.Add([]byte{0, 2, 0, 1, 3, 3, 0, 0, 0, 1, 3, 7, 0, 0, 1, 1, 3, 13, 0, 3, 32, 0})                                     // two calls unread; a re-check whose store fails, then one that serves both
	f.Add([]byte{0, 2, 0, 1, 3, 2, 0, 0, 0, 1, 3, 242, 0, 3, 242, 0, 3, 194, 0, 3, 188, 0, 3, 188, 0, 3, 48, 0, 3, 8, 0}) // Gets fail for a minute: the re-checks, 10 s apart by then, find the block at 62.7 s, not before
	f.Add([]byte{0, 2, 0, 1, 3, 2, 0, 0, 0, 3, 3, 0, 0, 0, 0, 1})                                                         // a later call's check reads the block that a failed check left unread: both calls get it
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
	// The call's next re-check (zero: none), and the delay it came after.
	recheckAt time.Time
	recheckIn time.Duration
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
	failPut   bool
	failGet   bool
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

// deliver hands the block of k to the calls waiting for it.
func (m *compatModel) deliver(k cid.Cid, got map[*compatCall][]cid.Cid) {
	for _, c := range m.calls {
		if !c.closed && c.want[k] {
			delete(c.want, k)
			got[c] = append(got[c], k)
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
		m.recheckDue(got) // those that a Publish's pacing sleep let run
		m.check(t, got, i/3)
	}
	// Last, the disk recovers and recheckMax passes (step 3 with
	// advance(48); the store wiring only): every input that left a stored
	// block unread checks that a re-check delivers it, not only those that
	// pass time after.
	got := map[*compatCall][]cid.Cid{}
	if m.step(3, 48<<2, nil, nil, got) {
		synctest.Wait()
		m.check(t, got, len(in)/3)
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
	case 3:
		return m.disk(a, got)
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
		if m.stored[k] && !m.failGet {
			// The block the check reads reaches the calls that a failed
			// check left waiting for it too, as a Publish's would.
			m.deliver(k, got)
			got[c] = append(got[c], k)
		} else {
			c.want[k] = true // a failed Get is a miss: the call waits (see unread)
		}
	}
	c.closed = len(c.want) == 0
	if m.failGet {
		// Every Get of the check fails, a stored key's or not: the call's
		// keys are checked again recheckFirst later.
		c.recheckIn = recheckFirst
		c.recheckAt = time.Now().Add(recheckFirst)
	}
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
	if len(toStore) > 0 && m.failPut {
		m.failCalls(keys)
	} else {
		for _, b := range toStore {
			m.stored[b.Cid()] = m.withStore
			m.deliver(b.Cid(), got)
		}
	}
	m.ps.Publish(from, blks...)
	return true
}

// disk: the disk fails, or recovers, as a%4 says (bit 0: PutMany fails, bit
// 1: Get fails), and then the clock moves on by advance(a>>2). An argument
// below 4, as in the seeds made before Gets could fail, moves it not.
func (m *compatModel) disk(a byte, got map[*compatCall][]cid.Cid) bool {
	if !m.withStore {
		return false
	}
	m.failPut, m.failGet = a&1 != 0, a&2 != 0
	m.store.failPut.Store(m.failPut)
	m.store.failGet.Store(m.failGet)
	d := advance(a >> 2)
	if d == 0 {
		return true
	}
	// A fake clock's sleep: the re-checks due meanwhile run at their times,
	// and those due at its end run as it ends (the step's synctest.Wait
	// waits for them).
	time.Sleep(d)
	m.recheckDue(got)
	if d >= recheckMax && !m.failGet && !m.failPut {
		m.requireNoneUnread()
	}
	return true
}

// advance is how far step 3 moves the clock for n (0-63): by quarters of
// recheckFirst up to 47, fine enough to fall before, on and after each of a
// call's first re-checks (100, 300, 700 ms... after it), and beyond from
// recheckMax by eighths of it, to reach the re-checks' longest delay. Not
// further: each call whose Gets fail is checked again every recheckMax, and
// steps of up to 16 recheckMax made inputs of many calls 12 times slower.
func advance(n byte) time.Duration {
	if n < 48 {
		return time.Duration(n) * recheckFirst / 4
	}
	return recheckMax + time.Duration(n-48)*recheckMax/8
}

// recheckDue runs the re-checks due by now, in the order of their times.
// Re-checks due at the same instant run at once, on the timers' goroutines;
// one after the other gives the same result: each finds the same store and
// the same faults, a found block reaches every call waiting for it, and
// whether a call checks again depends only on its own keys and the faults.
func (m *compatModel) recheckDue(got map[*compatCall][]cid.Cid) {
	now := time.Now()
	for {
		var next *compatCall
		for _, c := range m.calls {
			due := !c.closed && !c.recheckAt.IsZero() && !c.recheckAt.After(now)
			if due && (next == nil || c.recheckAt.Before(next.recheckAt)) {
				next = c
			}
		}
		if next == nil {
			return
		}
		m.recheck(next, got)
	}
}

// recheck is a re-check of c's keys (recheck.go): while Gets fail, or while
// the store of the blocks it finds fails (its Publish stores them again), it
// comes again after twice the delay, up to recheckMax. Otherwise the stored
// blocks that c awaits reach every call waiting for them, and c is checked
// no more: a key found missing waits for the Publish that brings it.
func (m *compatModel) recheck(c *compatCall, got map[*compatCall][]cid.Cid) {
	found := m.unread(c)
	if m.failGet || (len(found) > 0 && m.failPut) {
		c.recheckIn = min(2*c.recheckIn, recheckMax)
		c.recheckAt = c.recheckAt.Add(c.recheckIn)
		return
	}
	c.recheckAt = time.Time{}
	for _, k := range found {
		m.deliver(k, got)
	}
}

// unread returns the keys that c awaits and that are stored. Only a failed
// check leaves such keys: a block reaches the calls waiting for it when it
// is stored, and when a check or a re-check reads it.
func (m *compatModel) unread(c *compatCall) []cid.Cid {
	var keys []cid.Cid
	for _, b := range m.pool { // not c.want's order, which varies: a run of an input repeats
		if c.want[b.Cid()] && m.stored[b.Cid()] {
			keys = append(keys, b.Cid())
		}
	}
	return keys
}

// requireNoneUnread checks what the re-checks are for, once a healthy disk
// has given every call's next one (at most recheckMax away) its turn: no
// call that is still waiting awaits a stored block.
func (m *compatModel) requireNoneUnread() {
	for i, c := range m.calls {
		if !c.closed {
			require.Empty(m.t, m.unread(c), "call %d: stored blocks it still awaits after the re-checks", i)
		}
	}
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
