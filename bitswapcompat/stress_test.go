package bitswapcompat

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
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
		got := map[cid.Cid]bool{}
		for b := range ch {
			got[b.Cid()] = true
		}
		for _, k := range keys {
			require.True(t, got[k], "request missed %s", k)
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
