package bitswapcompat

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
)

// interestModel is what boxo's SessionInterestManager would hold: per key,
// the sessions interested in it. It is not safe for concurrent use; a test
// guards it as a whole or per key.
type interestModel struct {
	keys    []cid.Cid
	holders []map[uint64]bool // per key index
	down    []int             // per key index: times the key went from interested-by-some-session to interested-by-none
}

func newInterestModel(keys []cid.Cid) *interestModel {
	m := &interestModel{keys: keys, holders: make([]map[uint64]bool, len(keys)), down: make([]int, len(keys))}
	for i := range m.holders {
		m.holders[i] = make(map[uint64]bool)
	}
	return m
}

func (m *interestModel) record(ses uint64, idx []int) {
	for _, i := range idx {
		m.holders[i][ses] = true
	}
}

// removeWants ends the interest of ses in the keys idx and returns, in the
// order of idx, the keys whose last interest it ended.
func (m *interestModel) removeWants(ses uint64, idx []int) []cid.Cid {
	var freed []cid.Cid
	for _, i := range idx {
		if !m.holders[i][ses] {
			continue
		}
		delete(m.holders[i], ses)
		if len(m.holders[i]) == 0 {
			m.down[i]++
			freed = append(freed, m.keys[i])
		}
	}
	return freed
}

func (m *interestModel) all() []int {
	idx := make([]int, len(m.keys))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// sessionKeys returns the keys ses is interested in, in key order, nil if none.
func (m *interestModel) sessionKeys(ses uint64) []cid.Cid {
	var out []cid.Cid
	for i, h := range m.holders {
		if h[ses] {
			out = append(out, m.keys[i])
		}
	}
	return out
}

// requireMatches checks every query of sim against m. Blocks of pool are
// wanted if a session is interested; with calls (ps != nil) others may be.
func (m *interestModel) requireMatches(t *testing.T, w *wiring, sessions []uint64, pool []blocks.Block) {
	t.Helper()
	for _, ses := range sessions {
		require.Equal(t, [][]cid.Cid{m.sessionKeys(ses)}, w.sim.FilterSessionInterested(ses, m.keys), "session %d", ses)
	}
	var interested []cid.Cid
	for i, k := range m.keys {
		require.ElementsMatch(t, slices.Collect(maps.Keys(m.holders[i])), w.sim.InterestedSessions(m.keys[i:i+1]), "key %d", i)
		if len(m.holders[i]) > 0 {
			interested = append(interested, k)
		}
	}
	filtered := w.sim.FilterInterests(slicesCopy(m.keys))
	require.True(t, slices.Equal(interested, filtered[0]), "FilterInterests")
	wanted, _ := w.sim.SplitWantedUnwanted(pool)
	if w.ps == nil {
		require.True(t, slices.Equal(interested, cidsOf(wanted...)), "SplitWantedUnwanted: %v, want %v", cidsOf(wanted...), interested)
	} else {
		require.Subset(t, cidsOf(wanted...), interested, "SplitWantedUnwanted")
	}
}

// pick returns n indices below size, with repeats.
func pick(rng *rand.Rand, size, n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = rng.IntN(size)
	}
	return idx
}

func keysAt(keys []cid.Cid, idx []int) []cid.Cid {
	out := make([]cid.Cid, len(idx))
	for i, j := range idx {
		out[i] = keys[j]
	}
	return out
}

// clone returns a copy of m's interests.
func (m *interestModel) clone() *interestModel {
	c := newInterestModel(m.keys)
	for i, h := range m.holders {
		maps.Copy(c.holders[i], h)
	}
	return c
}

// apply makes the removal c in m and returns the keys it freed.
func (m *interestModel) apply(c simCall) []cid.Cid {
	if c.idx == nil {
		return m.removeWants(c.ses, m.all())
	}
	return m.removeWants(c.ses, c.idx)
}

// simCall is one Record or Remove* call of a test and what it returned.
type simCall struct {
	ses uint64
	idx []int     // the keys; nil for RemoveSession
	got []cid.Cid // what it returned
}

// startTraffic runs PubSub calls, publishes and SplitWantedUnwanted on pool
// from a few goroutines, as the client's requests and peers do, until the
// function it returns is called; that waits for them, and may be called again.
// Calls do not hold back any session's CANCEL, so they must change no Remove*
// result. With WithCancelFunc they would send CANCELs of their own, which no
// session model predicts: then it runs nothing.
func startTraffic(t *testing.T, w *wiring, pool []blocks.Block) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	goroutines := 3
	if w.log != nil {
		goroutines = 0
	}
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for {
				select {
				case <-done:
					return
				default:
					trafficStep(t, w, pool, rng)
				}
			}
		})
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// trafficStep is one request for a few blocks of pool, some of which arrive
// before it is cancelled; alone, the blocks arrive all the same.
func trafficStep(t *testing.T, w *wiring, pool []blocks.Block, rng *rand.Rand) {
	blks := make([]blocks.Block, 1+rng.IntN(3))
	for i := range blks {
		blks[i] = pool[rng.IntN(len(pool))]
	}
	from := []peer.ID{peerA, peerB, ""}[rng.IntN(3)]
	if w.ps == nil {
		msg := notifier.ResponseMessage{From: string(from), Blocks: blks}
		assert.NoError(t, w.sim.n.Publish(context.Background(), msg))
		w.sim.SplitWantedUnwanted(pool)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := w.ps.Subscribe(ctx, cidsOf(blks...)...)
	wanted, _ := w.sim.SplitWantedUnwanted(blks[:rng.IntN(len(blks)+1)])
	w.ps.Publish(from, wanted...)
	cancel()
	for b := range ch {
		assert.Contains(t, cidsOf(blks...), b.Cid())
	}
}

// cancelCounts returns how many times the cancel function got each of keys;
// nil without WithCancelFunc.
func (w *wiring) cancelCounts(keys []cid.Cid) []int {
	if w.log == nil {
		return nil
	}
	counts := make([]int, len(keys))
	for i, k := range keys {
		counts[i] = w.log.count(k)
	}
	return counts
}

// cancelDeltas returns, per key, the cancels since cancelCounts returned
// before.
func (w *wiring) cancelDeltas(keys []cid.Cid, before []int) []int {
	now := w.cancelCounts(keys)
	for i := range now {
		now[i] -= before[i]
	}
	return now
}
