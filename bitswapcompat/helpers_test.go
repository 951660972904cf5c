package bitswapcompat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
)

// newBlocks returns n blocks distinct from those of every other test.
func newBlocks(t testing.TB, n int) []blocks.Block {
	out := make([]blocks.Block, n)
	for i := range out {
		out[i] = blocks.NewBlock(fmt.Appendf(nil, "%s/%d", t.Name(), i))
	}
	return out
}

func cidsOf(blks ...blocks.Block) []cid.Cid {
	out := make([]cid.Cid, len(blks))
	for i, b := range blks {
		out[i] = b.Cid()
	}
	return out
}

func newStore() bstore.Blockstore {
	return bstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
}

// faultyStore fails Get or PutMany while the matching switch is on, and
// counts the lookups (Get and Has) made in it.
type faultyStore struct {
	bstore.Blockstore
	failGet, failPut atomic.Bool
	lookups          atomic.Int64
}

var errFault = errors.New("injected blockstore fault")

func (s *faultyStore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	s.lookups.Add(1)
	return s.Blockstore.Has(ctx, c)
}

func (s *faultyStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	s.lookups.Add(1)
	if s.failGet.Load() {
		return nil, errFault
	}
	return s.Blockstore.Get(ctx, c)
}

func (s *faultyStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	if s.failPut.Load() {
		return errFault
	}
	return s.Blockstore.PutMany(ctx, blks)
}

// drainNow reads what ch holds without waiting and reports whether ch is
// closed.
func drainNow(ch <-chan blocks.Block) (got []blocks.Block, closed bool) {
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				return got, true
			}
			got = append(got, b)
		default:
			return got, false
		}
	}
}

// requireReceived checks that ch holds exactly want (in any order) and is
// closed or not, as closed says.
func requireReceived(t testing.TB, ch <-chan blocks.Block, closed bool, want ...blocks.Block) {
	t.Helper()
	got, isClosed := drainNow(ch)
	require.ElementsMatch(t, cidsOf(want...), cidsOf(got...))
	require.Equal(t, closed, isClosed, "channel closed")
}

// requireEnded waits until ch is closed and checks that it held exactly
// want (in any order) before: for a call that an operation ends on a
// goroutine of its own, as a failed store does (failWaiting). It fails the
// test if ch is still open after ten seconds, a hang rather than a timing.
func requireEnded(t testing.TB, ch <-chan blocks.Block, want ...blocks.Block) {
	t.Helper()
	var got []blocks.Block
	hang := time.After(10 * time.Second)
	for {
		select {
		case b, ok := <-ch:
			if ok {
				got = append(got, b)
				continue
			}
			require.ElementsMatch(t, cidsOf(want...), cidsOf(got...))
			return
		case <-hang:
			t.Fatal("the call's channel is still open after ten seconds")
		}
	}
}

// requireIdle checks that nothing is left in the Notifiers.
func requireIdle(t testing.TB, ps *PubSub, sim *SessionInterestManager) {
	t.Helper()
	require.Zero(t, NotifierOf(ps).Stats(), "Notifier stats")
	if sim != nil {
		require.Zero(t, sim.n.Stats(), "session Notifier stats")
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Empty(t, ps.calls, "live calls")
	require.Nil(t, ps.finished, "finished calls not reaped")
	require.False(t, ps.log.underWay(), "calls whose Subscribe began and never settled")
}

// cancelLog records what a WithCancelFunc function receives.
type cancelLog struct {
	mu     sync.Mutex // guards the fields below
	keys   []cid.Cid
	counts map[cid.Cid]int
}

func (l *cancelLog) add(keys []cid.Cid) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append(l.keys, keys...)
	if l.counts == nil {
		l.counts = make(map[cid.Cid]int)
	}
	for _, k := range keys {
		l.counts[k]++
	}
}

// count returns how many times k was received.
func (l *cancelLog) count(k cid.Cid) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[k]
}

// since returns the keys received after the first mark, nil if none.
func (l *cancelLog) since(mark int) []cid.Cid {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mark == len(l.keys) {
		return nil
	}
	return slices.Clone(l.keys[mark:])
}

func (l *cancelLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// wiring is one way a fork builds its SessionInterestManager.
type wiring struct {
	ps    *PubSub // shares the Notifier with sim; nil when sim is built alone
	sim   *SessionInterestManager
	store *faultyStore // the Notifier's blockstore; nil: notify only
	log   *cancelLog   // set with WithCancelFunc: Remove* return nil, the CANCELs go here
}

// eachWiring runs f on a SessionInterestManager built alone, by New without
// and with a blockstore, and by NewWithOptions with WithCancelFunc.
func eachWiring(t *testing.T, f func(t *testing.T, w *wiring)) {
	t.Run("alone", func(t *testing.T) { f(t, &wiring{sim: NewSessionInterestManager()}) })
	eachSharedWiring(t, f)
}

// eachSharedWiring is eachWiring without the SessionInterestManager built
// alone: every wiring has a PubSub on the same Notifier.
func eachSharedWiring(t *testing.T, f func(t *testing.T, w *wiring)) {
	run := func(name string, w *wiring, opts ...Option) {
		t.Run(name, func(t *testing.T) {
			if w.store != nil {
				w.ps, w.sim = NewWithOptions(w.store, opts...)
			} else {
				w.ps, w.sim = NewWithOptions(nil, opts...)
			}
			defer w.ps.Shutdown()
			f(t, w)
		})
	}
	run("New", &wiring{})
	run("New+store", &wiring{store: memStore()})
	log := &cancelLog{}
	run("NewWithOptions+cancel", &wiring{log: log}, WithCancelFunc(log.add))
}

// publish delivers blks from peer from: through the PubSub, or, when the
// SessionInterestManager is alone, straight into its Notifier.
func (w *wiring) publish(t testing.TB, from peer.ID, blks ...blocks.Block) {
	t.Helper()
	if w.ps != nil {
		w.ps.Publish(from, blks...)
		return
	}
	msg := notifier.ResponseMessage{From: string(from), Blocks: blks}
	require.NoError(t, w.sim.n.Publish(context.Background(), msg))
}

// removeWants is RemoveSessionWants as the fork sees it: the keys to CANCEL.
// With WithCancelFunc those are what the function got during the call, which
// itself must return an empty slice.
func (w *wiring) removeWants(t testing.TB, ses uint64, ks []cid.Cid) []cid.Cid {
	t.Helper()
	if w.log == nil {
		return w.sim.RemoveSessionWants(ses, ks)
	}
	mark := w.log.len()
	require.Equal(t, []cid.Cid{}, w.sim.RemoveSessionWants(ses, ks), "RemoveSessionWants with WithCancelFunc")
	return w.log.since(mark)
}

// removeSession is RemoveSession as the fork sees it, as removeWants.
func (w *wiring) removeSession(t testing.TB, ses uint64) []cid.Cid {
	t.Helper()
	if w.log == nil {
		return w.sim.RemoveSession(ses)
	}
	mark := w.log.len()
	require.Nil(t, w.sim.RemoveSession(ses), "RemoveSession with WithCancelFunc")
	return w.log.since(mark)
}

// requireIdle checks that nothing is left in the wiring's Notifier.
func (w *wiring) requireIdle(t testing.TB) {
	t.Helper()
	if w.ps != nil {
		requireIdle(t, w.ps, w.sim)
		return
	}
	require.Zero(t, w.sim.n.Stats(), "session Notifier stats")
}

// requirePanicsWithPrefix checks that f panics with a string starting with
// prefix.
func requirePanicsWithPrefix(t testing.TB, prefix string, f func()) {
	t.Helper()
	var v any
	func() {
		defer func() { v = recover() }()
		f()
	}()
	require.NotNil(t, v, "no panic")
	msg, ok := v.(string)
	require.True(t, ok, "panic value %#v is not a string", v)
	require.True(t, strings.HasPrefix(msg, prefix), "panic %q does not start with %q", msg, prefix)
}
