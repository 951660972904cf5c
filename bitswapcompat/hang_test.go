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

// The shape of one round: requests of the session at once, the keys each
// wants, and the peers that answer every want.
const fetchRequests, fetchKeysPer, fetchPeers = 5, 10, 3

// fetchSession is the session all requests of a round belong to.
const fetchSession = 7

func fetchLargeRound(t *testing.T, withStore bool, rng *rand.Rand) {
	ps, sim := newFetchLargePubSub(withStore)
	defer ps.Shutdown()
	pool := distinctBlocks(t, rng, fetchRequests*fetchKeysPer)
	f := &fetchLarge{ps: ps, sim: sim, ops: make(chan fetchOp, 64)}
	sessDone := make(chan struct{})
	go f.runSession(sessDone)

	toSend := make(chan []blocks.Block, fetchRequests)
	var pubs sync.WaitGroup
	for p := range fetchPeers {
		prng := rand.New(rand.NewPCG(rng.Uint64(), uint64(p)))
		pubs.Go(func() { f.answerWants(peer.ID([]byte{byte('a' + p)}), prng, toSend) })
	}

	chans := f.startRequests(pool, toSend)
	close(toSend)
	pubs.Wait()
	close(f.ops)
	<-sessDone

	requireRequestsComplete(t, chans)
}

// newFetchLargePubSub wires a round, with a blockstore or notify-only.
func newFetchLargePubSub(withStore bool) (*PubSub, *SessionInterestManager) {
	if withStore {
		return New(newStore())
	}
	return New(nil)
}

// distinctBlocks returns n blocks whose data are new in every round, so
// that no round finds the blocks of an earlier one.
func distinctBlocks(t *testing.T, rng *rand.Rand, n int) []blocks.Block {
	pool := newBlocks(t, n)
	for i := range pool {
		pool[i] = blocks.NewBlock(append(pool[i].RawData(), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())))
	}
	return pool
}

// fetchOp is a want (want) or a receipt (!want) of keys, queued for the
// session's goroutine.
type fetchOp struct {
	want bool
	keys []cid.Cid
}

// fetchLarge is one round's wiring: the PubSub and SIM under test and the
// queue of the session's run loop.
type fetchLarge struct {
	ps  *PubSub
	sim *SessionInterestManager
	ops chan fetchOp
}

// runSession is the session's goroutine: wants and receipts, in the order
// they come, as the session's run loop takes them. It closes done when ops
// is closed and drained.
func (f *fetchLarge) runSession(done chan<- struct{}) {
	defer close(done)
	for o := range f.ops {
		if o.want {
			f.sim.RecordSessionInterest(fetchSession, o.keys)
		} else {
			f.sim.RemoveSessionWants(fetchSession, o.keys)
		}
	}
}

// receive is the client's receive path for one message from a peer.
func (f *fetchLarge) receive(from peer.ID, blks []blocks.Block) {
	wanted, _ := f.sim.SplitWantedUnwanted(blks)
	ks := cidsOf(blks...)
	if len(f.sim.InterestedSessions(ks)) > 0 {
		if in := f.sim.FilterSessionInterested(fetchSession, ks)[0]; len(in) > 0 {
			f.ops <- fetchOp{keys: in}
		}
	}
	f.ps.Publish(from, wanted...)
}

// answerWants is one peer's goroutine: for each request's blocks it gets,
// it sends each block, in its own order, one or two blocks a message.
func (f *fetchLarge) answerWants(from peer.ID, prng *rand.Rand, toSend <-chan []blocks.Block) {
	for blks := range toSend {
		order := prng.Perm(len(blks))
		for i := 0; i < len(order); {
			n := min(1+prng.IntN(2), len(order)-i)
			msg := make([]blocks.Block, 0, n)
			for _, j := range order[i : i+n] {
				msg = append(msg, blks[j])
			}
			f.receive(from, msg)
			i += n
		}
	}
}

// startRequests makes the requests of the session at once, each
// subscribing to its keys of pool, handing them to the session and sending
// the want to every peer; it returns their channels once all have started.
func (f *fetchLarge) startRequests(pool []blocks.Block, toSend chan<- []blocks.Block) []<-chan blocks.Block {
	chans := make([]<-chan blocks.Block, fetchRequests)
	var subs sync.WaitGroup
	for i := range fetchRequests {
		blks := pool[i*fetchKeysPer : (i+1)*fetchKeysPer]
		subs.Go(func() {
			keys := cidsOf(blks...)
			chans[i] = f.ps.Subscribe(context.Background(), keys...)
			f.ops <- fetchOp{want: true, keys: keys}
			// Every peer gets the want and answers with the blocks.
			for range fetchPeers {
				toSend <- blks
			}
		})
	}
	subs.Wait()
	return chans
}

// requireRequestsComplete checks, once every block has been published, that
// every request has all its blocks and is closed: one still waiting would
// be a lost wakeup.
func requireRequestsComplete(t *testing.T, chans []<-chan blocks.Block) {
	t.Helper()
	for i, ch := range chans {
		got, closed := drainNow(ch)
		require.Len(t, got, fetchKeysPer, "request %d: blocks delivered", i)
		require.True(t, closed, "request %d still open with all its blocks published", i)
	}
}
