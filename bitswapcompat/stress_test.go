package bitswapcompat

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStress_ClientWorkload runs the client's call sequences from many
// goroutines at once: requests that complete or are cancelled, sessions that
// shut down, blocks from peers and added locally. Every request that is not
// cancelled gets all its blocks; at the end nothing is left anywhere.
func TestStress_ClientWorkload(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		name := map[bool]string{false: "notify-only", true: "blockstore"}[withStore]
		t.Run(name, func(t *testing.T) {
			var store *faultyStore
			if withStore {
				store = memStore()
			}
			c := newClient(store)
			pool := newBlocks(t, 256)
			const workers, rounds, sessions = 8, 150, 6
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() { stressWorker(t, c, pool, rand.New(rand.NewPCG(uint64(w), 7)), sessions, rounds) })
			}
			wg.Wait()
			for ses := range uint64(sessions) {
				c.removeSession(ses + 1)
			}
			c.ps.Shutdown()
			requireIdle(t, c.ps, c.sim)
		})
	}
}

func stressWorker(t *testing.T, c *client, pool []blocks.Block, rng *rand.Rand, sessions, rounds int) {
	for range rounds {
		ses := uint64(rng.IntN(sessions) + 1)
		want := make([]blocks.Block, rng.IntN(4)+1)
		for i := range want {
			want[i] = pool[rng.IntN(len(pool))]
		}
		keys := cidsOf(want...)
		ctx, cancel := context.WithCancel(context.Background())
		ch := c.getBlocks(ctx, ses, keys...)
		switch rng.IntN(10) {
		case 0: // the request is cancelled
			cancel()
			for range ch {
			}
			c.cancelSessionWants(ses, keys...)
			continue
		case 1: // the session shuts down, the request goes on
			c.removeSession(ses)
		}
		from := peer.ID([]byte{byte('a' + rng.IntN(4))})
		if rng.IntN(3) == 0 {
			from = "" // added locally
		}
		c.receive(from, want, slices.Clone(keys), nil) // FilterInterests filters haves in place
		// Publish delivers before it returns, so every key has arrived: by
		// this receive or an earlier one, or from the blockstore.
		blks, closed := drainNow(ch)
		got := map[cid.Cid]bool{}
		for _, b := range blks {
			got[b.Cid()] = true
		}
		for _, k := range keys {
			assert.True(t, got[k], "request missed %s", k)
		}
		if !assert.True(t, closed, "request still open with every key published") {
			cancel()
			return
		}
		c.cancelSessionWants(ses, keys...)
		cancel()
	}
}

// TestStress_SubscribePublishCancel races Subscribe, Publish, cancellation
// and Shutdown on few keys, for the race detector and goleak.
func TestStress_SubscribePublishCancel(t *testing.T) {
	ps, sim := New(newStore())
	pool := newBlocks(t, 8)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for range 300 {
				ctx, cancel := context.WithCancel(context.Background())
				ch := ps.Subscribe(ctx, pool[rng.IntN(8)].Cid(), pool[rng.IntN(8)].Cid())
				sim.RecordSessionInterest(uint64(w+1), []cid.Cid{pool[rng.IntN(8)].Cid()})
				ps.Publish(peer.ID("p"), pool[rng.IntN(8)])
				if rng.IntN(2) == 0 {
					cancel()
				}
				sim.SplitWantedUnwanted(pool)
				sim.RemoveSessionWants(uint64(w+1), cidsOf(pool[rng.IntN(8)]))
				cancel()
				for range ch {
				}
			}
			sim.RemoveSession(uint64(w + 1))
		})
	}
	wg.Wait()
	ps.Shutdown()
	requireIdle(t, ps, sim)
}

// TestStress_ShutdownAmidFailingStores races calls, their cancellation, local
// and remote Publishes, a blockstore whose Get and PutMany start and stop
// failing, and, in half of the runs, a Shutdown while all that goes on; then
// Shutdown again. Half of the calls have their ctx cancelled at once, on a
// goroutine of its own; the others keep theirs until after the checks, so
// every run has calls that only Shutdown can end. Every channel that Subscribe returned is closed when
// Shutdown has returned, without waiting for anything, and nothing is left:
// no subscription, no call, no call being ended. 200 runs in a synctest
// bubble, where goroutines run in an order the bubble picks, and 400 on the
// real scheduler. From a review of the call's life (helper-106), which found
// no bug.
func TestStress_ShutdownAmidFailingStores(t *testing.T) {
	t.Run("bubble", func(t *testing.T) {
		for seed := range uint64(200) {
			synctest.Test(t, func(t *testing.T) { stressShutdownAmidFailingStores(t, seed) })
		}
	})
	t.Run("real", func(t *testing.T) {
		for seed := range uint64(400) {
			stressShutdownAmidFailingStores(t, seed)
		}
	})
}

func stressShutdownAmidFailingStores(t *testing.T, seed uint64) {
	store := memStore()
	s := &shutdownStress{store: store}
	s.ps = NewPubSub(store, WithErrorFunc(func(error) {})) // the failures are the point
	s.pool = newBlocks(t, 6)
	defer s.cancelLater()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { s.work(seed, w) })
	}
	if rand.New(rand.NewPCG(seed, 99)).IntN(2) == 0 {
		s.ps.Shutdown() // while the workers run
	}
	wg.Wait()
	s.ps.Shutdown()
	requireShutdownLeftNothing(t, seed, s.ps, s.chans)
}

// shutdownStress is one run of TestStress_ShutdownAmidFailingStores: the
// PubSub, its failing store, the blocks the workers choose from, and what
// the workers' calls leave for the checks and the cleanup.
type shutdownStress struct {
	ps    *PubSub
	store *faultyStore
	pool  []blocks.Block

	mu    sync.Mutex // guards chans and later
	chans []<-chan blocks.Block
	later []context.CancelFunc
}

// cancelLater ends, once the checks are done, the calls that kept their
// ctx.
func (s *shutdownStress) cancelLater() {
	for _, cancel := range s.later {
		cancel()
	}
}

// work is worker w's goroutine: twelve steps drawn from its own seeded
// generator, half of them calls, a third Publishes, the rest a change of
// the store's failures.
func (s *shutdownStress) work(seed uint64, w int) {
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	for range 12 {
		switch rng.IntN(6) {
		case 0, 1, 2:
			s.subscribe(rng)
		case 3, 4:
			s.publish(rng)
		default:
			s.store.failPut.Store(rng.IntN(2) == 0)
			s.store.failGet.Store(rng.IntN(3) == 0)
		}
	}
}

// subscribe makes a call for one to three keys of the pool, whose ctx is
// either cancelled at once, racing what follows, or kept until Shutdown
// has ended the call.
func (s *shutdownStress) subscribe(rng *rand.Rand) {
	keys := make([]cid.Cid, 1+rng.IntN(3))
	for i := range keys {
		keys[i] = s.pool[rng.IntN(len(s.pool))].Cid()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.ps.Subscribe(ctx, keys...)
	s.mu.Lock()
	s.chans = append(s.chans, ch)
	if rng.IntN(2) == 0 {
		go cancel() // racing what follows
	} else {
		s.later = append(s.later, cancel) // live until Shutdown ends it
	}
	s.mu.Unlock()
}

// publish publishes one block of the pool, locally or from a peer.
func (s *shutdownStress) publish(rng *rand.Rand) {
	from := peer.ID("")
	if rng.IntN(2) == 0 {
		from = peerA
	}
	s.ps.Publish(from, s.pool[rng.IntN(len(s.pool))])
}

// requireShutdownLeftNothing checks that, once Shutdown has returned, every
// channel is closed without waiting for anything and nothing is left: no
// subscription, no call, no call being ended.
func requireShutdownLeftNothing(t *testing.T, seed uint64, ps *PubSub, chans []<-chan blocks.Block) {
	t.Helper()
	for i, ch := range chans {
		_, closed := drainNow(ch)
		require.True(t, closed, "seed %d: channel %d of %d open after Shutdown", seed, i, len(chans))
	}
	requireIdle(t, ps, nil)
	ps.mu.Lock()
	ending := ps.ending
	ps.mu.Unlock()
	require.Zero(t, ending, "seed %d: calls still being ended after Shutdown", seed)
}

// Record, RemoveSessionWants and RemoveSession calls of many sessions, mixed,
// on overlapping keys, checked one by one against a model while PubSub calls
// and blocks come and go on the same keys. The test serialises the calls
// that touch a key (a lock per key, the model's too), so each call's exact
// result is known; calls on other keys run at once. Each session belongs to
// one goroutine, which therefore knows which keys RemoveSession touches.
// With WithCancelFunc the calls return nil and the keys each call frees must
// reach the cancel function before it returns.
func TestStress_SessionInterestMatchesModel(t *testing.T) {
	eachWiring(t, func(t *testing.T, w *wiring) {
		const workers, ops = 8, 250
		pool := newBlocks(t, 12)
		keys := cidsOf(pool...)
		stop := startTraffic(t, w, pool)
		defer stop()
		m := newInterestModel(keys)
		locks := make([]sync.Mutex, len(keys)) // locks[i] guards m.holders[i], m.down[i], returned[i]
		returned := make([]int, len(keys))
		var sessions []uint64
		for g := range workers {
			sessions = append(sessions, uint64(g), ^uint64(0)-uint64(g))
		}
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() {
				mw := &modelWorker{
					w: w, m: m, locks: locks, returned: returned, keys: keys,
					rng:  rand.New(rand.NewPCG(uint64(g), 5)),
					mine: map[uint64]map[int]bool{sessions[2*g]: {}, sessions[2*g+1]: {}},
				}
				for range ops {
					if !mw.step(t) {
						return
					}
				}
				for ses := range mw.mine {
					mw.removeSession(t, ses)
				}
			})
		}
		wg.Wait()
		require.Equal(t, m.down, returned, "per key: times returned by Remove*, times it went from interested to not")
		m.requireMatches(t, w, sessions, pool)
		stop()
		w.requireIdle(t)
	})
}

// modelWorker is one goroutine of TestStress_SessionInterestMatchesModel.
type modelWorker struct {
	w        *wiring
	m        *interestModel
	locks    []sync.Mutex
	returned []int
	keys     []cid.Cid
	rng      *rand.Rand
	mine     map[uint64]map[int]bool // the keys of this goroutine's sessions
}

// step makes one random call and reports whether it returned what the model
// says.
func (mw *modelWorker) step(t *testing.T) bool {
	var ses uint64
	for s := range mw.mine {
		if ses = s; mw.rng.IntN(2) == 0 {
			break
		}
	}
	switch mw.rng.IntN(7) {
	case 0, 1, 2:
		idx := pick(mw.rng, len(mw.keys), 1+mw.rng.IntN(4))
		unlock := mw.lock(idx)
		defer unlock()
		mw.w.sim.RecordSessionInterest(ses, keysAt(mw.keys, idx))
		mw.m.record(ses, idx)
		for _, i := range idx {
			mw.mine[ses][i] = true
		}
		return true
	case 3, 4, 5:
		idx := pick(mw.rng, len(mw.keys), 1+mw.rng.IntN(5))
		unlock := mw.lock(idx)
		defer unlock()
		counts := mw.w.cancelCounts(mw.keys)
		got := mw.w.sim.RemoveSessionWants(ses, keysAt(mw.keys, idx))
		want := mw.m.removeWants(ses, idx)
		for _, i := range idx {
			delete(mw.mine[ses], i)
		}
		return mw.check(t, "RemoveSessionWants", got, want, idx, counts)
	default:
		return mw.removeSession(t, ses)
	}
}

func (mw *modelWorker) removeSession(t *testing.T, ses uint64) bool {
	idx := slices.Sorted(maps.Keys(mw.mine[ses]))
	unlock := mw.lock(idx)
	defer unlock()
	counts := mw.w.cancelCounts(mw.keys)
	got := mw.w.sim.RemoveSession(ses)
	want := mw.m.removeWants(ses, idx)
	clear(mw.mine[ses])
	return mw.check(t, "RemoveSession", got, want, idx, counts)
}

// check compares what a removal returned (or, with WithCancelFunc, sent to
// the cancel function) with the model, and counts it. The caller holds the
// locks of idx, so no other call touches those keys meanwhile.
func (mw *modelWorker) check(t *testing.T, method string, got, want []cid.Cid, idx []int, counts []int) bool {
	if mw.w.log != nil {
		if !assert.Empty(t, got, "%s with WithCancelFunc", method) {
			return false
		}
		deltas := mw.w.cancelDeltas(mw.keys, counts)
		got = nil
		for _, i := range uniq(idx) {
			for range deltas[i] {
				got = append(got, mw.keys[i])
			}
		}
		return assert.ElementsMatch(t, want, got, "%s: keys sent to the cancel function", method) && mw.count(got)
	}
	if method == "RemoveSession" || len(want) == 0 { // nil or empty: either will do
		return assert.ElementsMatch(t, want, got, method) && mw.count(got)
	}
	return assert.Equal(t, want, got, method) && mw.count(got)
}

func (mw *modelWorker) count(got []cid.Cid) bool {
	for _, k := range got {
		mw.returned[slices.Index(mw.keys, k)]++
	}
	return true
}

// lock takes the locks of the keys idx, in ascending order, and returns the
// function that releases them.
func (mw *modelWorker) lock(idx []int) (unlock func()) {
	u := uniq(idx)
	for _, i := range u {
		mw.locks[i].Lock()
	}
	return func() {
		for _, i := range u {
			mw.locks[i].Unlock()
		}
	}
}

func uniq(idx []int) []int {
	u := slices.Clone(idx)
	slices.Sort(u)
	return slices.Compact(u)
}
