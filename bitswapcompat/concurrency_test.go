package bitswapcompat

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Removals race on the same keys, also for the same session, while PubSub
// calls subscribe and blocks are published for those keys. Rounds alternate
// a phase of concurrent RecordSessionInterest calls with one of concurrent
// RemoveSessionWants and RemoveSession calls. Within a phase of removals the
// model's outcome does not depend on their order: a key goes from
// interested-by-some-session to interested-by-none exactly when some session
// was interested before the phase and none is after, and then exactly one of
// the removals must return it (with WithCancelFunc: the cancel function must
// get it once, and the removals return nil). A removal returns only keys of
// its argument, each once, in its order. After each round every query
// matches the model; at the end, for each key, the times it was returned
// equal the times it went from interested to not.
func TestSIM_ConcurrentRemovalsReportEachKeyOnce(t *testing.T) {
	eachWiring(t, func(t *testing.T, w *wiring) {
		pool := newBlocks(t, 16)
		keys := cidsOf(pool...)
		stop := startTraffic(t, w, pool)
		defer stop()
		m := newInterestModel(keys)
		returned := make([]int, len(keys))
		for r := range 30 {
			removalRound(t, w, m, pool, keys, r, returned)
		}
		for _, ses := range sessionIDs {
			for _, k := range w.removeSession(t, ses) {
				returned[slices.Index(keys, k)]++
			}
			m.removeWants(ses, m.all())
		}
		require.Equal(t, m.down, returned, "per key: times returned by Remove*, times it went from interested to not")
		stop()
		w.requireIdle(t)
	})
}

// removalRound runs round r of TestSIM_ConcurrentRemovalsReportEachKeyOnce:
// a phase of concurrent records, then one of concurrent removals, each
// well formed, both applied to the model m. Per key, a removal must have
// returned it (or, with WithCancelFunc, the cancel function got it) exactly
// once if it went from interested to not in the phase, and never
// otherwise; then every query matches m. It adds to returned, per key, the
// times the round returned it.
func removalRound(t *testing.T, w *wiring, m *interestModel, pool []blocks.Block, keys []cid.Cid, r int, returned []int) {
	t.Helper()
	for _, c := range recordPhase(w, keys, r) {
		m.record(c.ses, c.idx)
	}
	before := m.clone()
	counts := w.cancelCounts(keys)
	got := make([]int, len(keys))
	for _, c := range removalPhase(w, keys, r) {
		requireWellFormed(t, w, c, keys, before.sessionKeys(c.ses))
		for _, k := range c.got {
			got[slices.Index(keys, k)]++
		}
		m.apply(c)
	}
	if w.log != nil {
		got = w.cancelDeltas(keys, counts)
	}
	want := make([]int, len(keys))
	for i := range keys {
		if len(before.holders[i]) > 0 && len(m.holders[i]) == 0 {
			want[i] = 1
		}
		returned[i] += got[i]
	}
	require.Equal(t, want, got, "round %d: per key, how many removals returned it", r)
	m.requireMatches(t, w, sessionIDs, pool)
}

const phaseWorkers, phaseOps = 8, 6

// recordPhase records random keys for random sessions from many goroutines
// at once.
func recordPhase(w *wiring, keys []cid.Cid, round int) []simCall {
	return runWorkers(phaseWorkers, phaseOps, round, func(_, _ int, rng *rand.Rand) simCall {
		c := simCall{ses: sessionIDs[rng.IntN(len(sessionIDs))], idx: pick(rng, len(keys), 1+rng.IntN(5))}
		w.sim.RecordSessionInterest(c.ses, keysAt(keys, c.idx))
		return c
	})
}

// removalPhase removes random keys or whole sessions, at random, from many
// goroutines at once. Every other round each goroutine starts by removing
// every key of a session of its own, all at once, so that the last
// interests of a key end together.
func removalPhase(w *wiring, keys []cid.Cid, round int) []simCall {
	return runWorkers(phaseWorkers, phaseOps, -1-round, func(g, op int, rng *rand.Rand) simCall {
		c := simCall{ses: sessionIDs[rng.IntN(len(sessionIDs))]}
		switch {
		case round%2 == 1 && op == 0:
			c.ses = sessionIDs[g%len(sessionIDs)]
			c.idx = rng.Perm(len(keys))
		case rng.IntN(4) == 0:
			c.got = w.sim.RemoveSession(c.ses)
			return c
		default:
			c.idx = pick(rng, len(keys), 1+rng.IntN(6))
		}
		c.got = w.sim.RemoveSessionWants(c.ses, keysAt(keys, c.idx))
		return c
	})
}

// runWorkers runs f ops times on each of n goroutines at once and returns
// what the calls returned. f gets the goroutine's number, the call's number
// and the goroutine's own generator, seeded from seed.
func runWorkers(n, ops, seed int, f func(g, op int, rng *rand.Rand) simCall) []simCall {
	out := make([][]simCall, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(g)))
			<-start
			for op := range ops {
				out[g] = append(out[g], f(g, op, rng))
			}
		})
	}
	close(start)
	wg.Wait()
	return slices.Concat(out...)
}

// requireWellFormed checks what one removal returned: nil with
// WithCancelFunc; otherwise no key twice, only keys that the session was
// interested in before the phase, and for RemoveSessionWants only keys of
// its argument, in its order.
func requireWellFormed(t *testing.T, w *wiring, c simCall, keys, heldBefore []cid.Cid) {
	t.Helper()
	if w.log != nil {
		require.Empty(t, c.got) // nil from RemoveSession, empty from RemoveSessionWants, as boxo's
		return
	}
	seen := make(map[cid.Cid]bool)
	for _, k := range c.got {
		require.False(t, seen[k], "a key returned twice by one call")
		seen[k] = true
		require.Contains(t, heldBefore, k, "a key returned for a session not interested in it")
	}
	if c.idx == nil {
		return
	}
	args := keysAt(keys, c.idx)
	pos := 0
	for _, k := range c.got {
		i := slices.Index(args[pos:], k)
		require.GreaterOrEqual(t, i, 0, "RemoveSessionWants(%v) returned %v: not in the order of its argument", args, c.got)
		pos += i + 1
	}
}

// A RecordSessionInterest racing RemoveSession of the same session either
// joins the session before it ends, and then its keys are returned too, or
// starts the session anew, and then they stay recorded: never both, never
// neither.
func TestSIM_RecordRacingRemoveSession(t *testing.T) {
	eachWiring(t, func(t *testing.T, w *wiring) {
		pool := newBlocks(t, 2)
		k := cidsOf(pool...)
		outcomes := map[bool]int{}
		for range 1000 {
			w.sim.RecordSessionInterest(7, k[:1])
			mark := 0
			if w.log != nil {
				mark = w.log.len()
			}
			start := make(chan struct{})
			var removed []cid.Cid
			var wg sync.WaitGroup
			wg.Go(func() {
				<-start
				removed = w.sim.RemoveSession(7)
			})
			wg.Go(func() {
				<-start
				w.sim.RecordSessionInterest(7, k[1:])
			})
			close(start)
			wg.Wait()
			if w.log != nil { // Record sends no CANCEL: what came meanwhile is RemoveSession's
				require.Nil(t, removed)
				removed = w.log.since(mark)
			}
			left := w.sim.FilterSessionInterested(7, k)[0]
			require.Contains(t, removed, k[0])
			require.ElementsMatch(t, k, append(slices.Clone(removed), left...), "removed %v, left %v", removed, left)
			outcomes[len(left) == 0]++
			require.ElementsMatch(t, left, w.removeSession(t, 7))
		}
		t.Logf("Record first: %d, RemoveSession first: %d", outcomes[true], outcomes[false])
		w.requireIdle(t)
	})
}
