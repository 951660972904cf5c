package bitswapcompat

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// TestStress_FetchLargePattern replays, in the shared wiring, the pattern of
// boxo's BenchmarkFixedDelay/10Nodes-AllToAll-UnixfsFetchLarge, where a
// benchmark run once hung with five requests waiting on their channels:
// several requests of one session at once, each subscribing to ten keys and
// then handing them to the session, whose own goroutine records its interest
// and lets go of each key as its block arrives, while several peers send the
// blocks, some more than once, through the client's receive path
// (SplitWantedUnwanted, the session's filter, Publish). Once every block has
// been published every request must have all its blocks and be closed: a
// request still waiting then would be a lost wakeup.
func TestStress_FetchLargePattern(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		name := map[bool]string{false: "notify-only", true: "blockstore"}[withStore]
		t.Run(name, func(t *testing.T) {
			rounds := 60
			if testing.Short() {
				rounds = 10
			}
			for r := range rounds {
				fetchLargeRound(t, withStore, rand.New(rand.NewPCG(uint64(r), 9)))
				if t.Failed() {
					return
				}
			}
		})
	}
}

func fetchLargeRound(t *testing.T, withStore bool, rng *rand.Rand) {
	const requests, keysPer, peers = 5, 10, 3
	var ps *PubSub
	var sim *SessionInterestManager
	if withStore {
		ps, sim = New(newStore())
	} else {
		ps, sim = New(nil)
	}
	defer ps.Shutdown()
	const ses = 7
	pool := newBlocks(t, requests*keysPer)
	for i := range pool { // distinct blocks in every round
		pool[i] = blocks.NewBlock(append(pool[i].RawData(), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())))
	}

	// The session's goroutine: wants and receipts, in the order they come,
	// as the session's run loop takes them.
	type op struct {
		want bool
		keys []cid.Cid
	}
	ops := make(chan op, 64)
	sessDone := make(chan struct{})
	go func() {
		defer close(sessDone)
		for o := range ops {
			if o.want {
				sim.RecordSessionInterest(ses, o.keys)
			} else {
				sim.RemoveSessionWants(ses, o.keys)
			}
		}
	}()

	// receive is the client's receive path for one message from a peer.
	receive := func(from peer.ID, blks []blocks.Block) {
		wanted, _ := sim.SplitWantedUnwanted(blks)
		ks := cidsOf(blks...)
		if len(sim.InterestedSessions(ks)) > 0 {
			if in := sim.FilterSessionInterested(ses, ks)[0]; len(in) > 0 {
				ops <- op{keys: in}
			}
		}
		ps.Publish(from, wanted...)
	}

	toSend := make(chan []blocks.Block, requests)
	var pubs sync.WaitGroup
	for p := range peers {
		prng := rand.New(rand.NewPCG(rng.Uint64(), uint64(p)))
		pubs.Go(func() {
			for blks := range toSend {
				// Each peer sends each block of the request, in its own
				// order, one or two blocks a message.
				order := prng.Perm(len(blks))
				for i := 0; i < len(order); {
					n := min(1+prng.IntN(2), len(order)-i)
					msg := make([]blocks.Block, 0, n)
					for _, j := range order[i : i+n] {
						msg = append(msg, blks[j])
					}
					receive(peer.ID([]byte{byte('a' + p)}), msg)
					i += n
				}
			}
		})
	}

	chans := make([]<-chan blocks.Block, requests)
	var subs sync.WaitGroup
	for i := range requests {
		blks := pool[i*keysPer : (i+1)*keysPer]
		subs.Go(func() {
			keys := cidsOf(blks...)
			chans[i] = ps.Subscribe(context.Background(), keys...)
			ops <- op{want: true, keys: keys}
			// Every peer gets the want and answers with the blocks.
			for range peers {
				toSend <- blks
			}
		})
	}
	subs.Wait()
	close(toSend)
	pubs.Wait()
	close(ops)
	<-sessDone

	for i, ch := range chans {
		got, closed := drainNow(ch)
		require.Len(t, got, keysPer, "request %d: blocks delivered", i)
		require.True(t, closed, "request %d still open with all its blocks published", i)
	}
}
