package bitswapcompat

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// failRecord is a failed store that a stress publisher logged: its key and
// the Publish's snapshot.
type failRecord struct {
	k      cid.Cid
	listed uint64
}

// failLogStress drives a failLog as failWaiting and track do, under one
// lock standing for PubSub.mu: publishers log failures, calls begin, and
// settle under the lock as track does, checking that every failure logged
// since they began and whose snapshot includes them is still there, or off
// it, as a fetch that hit or an error path does.
type failLogStress struct {
	mu      sync.Mutex
	l       failLog
	keys    []cid.Cid
	records []failRecord
	next    int // keys logged so far
	maxLen  int
	lost    int // failures a call under way needed and did not find
}

// publish logs the failed stores of keys, one at a time, until all are.
func (x *failLogStress) publish() {
	for {
		listed := x.l.begun.Load()
		runtime.Gosched()
		x.mu.Lock()
		if x.next == len(x.keys) {
			x.mu.Unlock()
			return
		}
		k := x.keys[x.next]
		x.next++
		x.l.prune()
		if x.l.underWay() {
			x.l.add(k, listed)
		}
		x.records = append(x.records, failRecord{k, listed})
		x.maxLen = max(x.maxLen, x.l.len())
		x.mu.Unlock()
	}
}

// call begins and settles calls until every key is logged.
func (x *failLogStress) call(r *rand.Rand) {
	for {
		x.mu.Lock()
		n0, done := len(x.records), x.next == len(x.keys)
		x.mu.Unlock()
		if done {
			return
		}
		seq, epoch := x.l.begin()
		for range r.IntN(3) {
			runtime.Gosched()
		}
		if r.IntN(4) == 0 {
			x.l.settle(epoch)
			continue
		}
		x.mu.Lock()
		for _, rec := range x.records[n0:] {
			if rec.listed >= seq && x.l.failed(rec.k) < seq {
				x.lost++
			}
		}
		x.l.settle(epoch)
		if !x.l.empty() {
			x.l.prune()
		}
		x.mu.Unlock()
	}
}

// A stress test of failLog alone: two publishers, four calls, a quarter of
// the settles off the lock. No call misses a failure it needs, however the
// epochs move on meanwhile. (Written by a review of the epochs, beside an
// exhaustive model of one call, two publishers and three prunes.)
func TestFailLog_KeepsWhatCallsUnderWayNeed(t *testing.T) {
	x := &failLogStress{keys: cidsOf(newBlocks(t, 4000)...)}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(x.publish)
	}
	for i := range 4 {
		r := rand.New(rand.NewPCG(uint64(i), 1))
		wg.Go(func() { x.call(r) })
	}
	wg.Wait()
	require.Zero(t, x.lost, "failures that a call under way needed and did not find")
	t.Logf("at most %d entries; %d epochs, %d calls", x.maxLen, x.l.epoch.Load(), x.l.begun.Load())
}

// Every path of Subscribe and of its one-key path settles what it began
// (failLog.begin): a panic of the BlockWrapper in a hit, a ctx ended before,
// a hit, a call completed in its Subscribe, a tracked call, and calls after
// Shutdown. One that did not would keep the log of failed stores from ever
// being dropped. (Written by the same review.)
func TestPubSub_EveryPathSettles(t *testing.T) {
	store := memStore()
	blks := newBlocks(t, 3)
	require.NoError(t, store.PutMany(t.Context(), blks[:2]))
	panicky := true
	ps, _ := NewWithOptions(store, WithBlockWrapper(func(b blocks.Block, _ peer.ID, _ time.Duration) blocks.Block {
		if panicky {
			panic("wrapper")
		}
		return b
	}))
	settled := func(what string) {
		t.Helper()
		ps.mu.Lock()
		underWay := ps.log.underWay()
		ps.mu.Unlock()
		require.False(t, underWay, what)
	}
	require.Panics(t, func() { ps.Subscribe(t.Context(), blks[0].Cid()) })
	settled("one key found, the wrapper panics")
	require.Panics(t, func() { ps.Subscribe(t.Context(), blks[0].Cid(), blks[1].Cid()) })
	settled("two keys found, the wrapper panics in the delivery")
	panicky = false
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	requireReceived(t, ps.Subscribe(ended, blks[2].Cid()), true)
	settled("one key, ctx ended before")
	requireEnded(t, ps.Subscribe(ended, blks[1].Cid(), blks[2].Cid()))
	settled("two keys, ctx ended before")
	requireReceived(t, ps.Subscribe(t.Context(), blks[0].Cid()), true, blks[0])
	settled("one key found")
	requireReceived(t, ps.Subscribe(t.Context(), blks[0].Cid(), blks[1].Cid()), true, blks[0], blks[1])
	settled("two keys found, completed in the Subscribe")
	live, stop := context.WithCancel(t.Context())
	ch := ps.Subscribe(live, blks[2].Cid())
	settled("one key missing, tracked")
	stop()
	requireEnded(t, ch)
	ps.Shutdown()
	requireReceived(t, ps.Subscribe(t.Context(), blks[2].Cid()), true)
	requireReceived(t, ps.Subscribe(t.Context(), blks[1].Cid(), blks[2].Cid()), true)
	settled("after Shutdown")
}
