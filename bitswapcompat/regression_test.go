package bitswapcompat_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/bitswapsync/notifier/bitswapcompat"
)

// Two requests in one session want the same key, and one is cancelled while
// the block is on its way. In boxo today the cancelled request's
// RemoveSessionWants ends the session's interest in the key, so the block is
// "unwanted" when it arrives and the other request hangs. Through
// bitswapcompat the other request must still get the block: the waiting
// request counts in SplitWantedUnwanted. The CANCEL goes out as in boxo: the
// cancelled request's RemoveSessionWants returns the key, once, and nothing
// returns it later. The calls are the ones boxo's client makes, in its order;
// the cancellation and the arrival race, in both orders.
func TestRegression_TwoRequestsInOneSessionWantSameKeyOneCancelled(t *testing.T) {
	rounds := 500
	if testing.Short() {
		rounds = 50
	}
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	ps, sim := bitswapcompat.New(bs)
	defer ps.Shutdown()
	for r := range rounds {
		b := blocks.NewBlock(fmt.Appendf(nil, "two requests, one cancelled, round %d", r))
		if err := twoRequestsOneCancelled(ps, sim, b, r%2 == 0); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	sim.RemoveSession(regressionSession)
	if st := bitswapcompat.NotifierOf(ps).Stats(); st.Keys != 0 || st.Wants != 0 {
		t.Fatalf("Stats %+v once every request has ended", st)
	}
}

const regressionSession = 1

// twoRequestsOneCancelled runs one round: two requests of one session want
// b; the first is cancelled while b arrives from a peer, either starting
// first.
func twoRequestsOneCancelled(ps *bitswapcompat.PubSub, sim *bitswapcompat.SessionInterestManager, b blocks.Block, cancelFirst bool) error {
	k := []cid.Cid{b.Cid()}
	// Session.GetBlocks twice: getter.AsyncGetBlocks subscribes, then the
	// session records the interest.
	ctx1, cancel1 := context.WithCancel(context.Background())
	r1 := ps.Subscribe(ctx1, k...)
	sim.RecordSessionInterest(regressionSession, k)
	r2 := ps.Subscribe(context.Background(), k...)
	sim.RecordSessionInterest(regressionSession, k)

	cancels := raceCancelAndArrival(ps, sim, b, cancel1, cancelFirst)

	if got, err := readAll(r2); err != nil || len(got) != 1 || got[0].Cid() != b.Cid() {
		return fmt.Errorf("the request that was not cancelled got %d blocks (%v), want the block", len(got), err)
	}
	if _, err := readAll(r1); err != nil {
		return fmt.Errorf("the cancelled request: %w", err)
	}
	// Session.handleReceive: the session got its block.
	if slices.Contains(sim.RemoveSessionWants(regressionSession, k), b.Cid()) {
		cancels = append(cancels, "the session's handleReceive")
	}
	// The session's interest is one, however many of its requests want k:
	// the first RemoveSessionWants ends it.
	if len(cancels) != 1 || cancels[0] != "the cancelled request" {
		return fmt.Errorf("CANCELs of k returned by %q, want by the cancelled request alone", cancels)
	}
	return nil
}

// raceCancelAndArrival races the cancellation of the first request (cancel1,
// then the session's CancelSessionWants) against b's arrival from a peer,
// the goroutine of the one named by cancelFirst started first. It returns
// who, so far, returned b's key for a CANCEL.
func raceCancelAndArrival(ps *bitswapcompat.PubSub, sim *bitswapcompat.SessionInterestManager, b blocks.Block, cancel1 context.CancelFunc, cancelFirst bool) (cancels []string) {
	k := []cid.Cid{b.Cid()}
	start := make(chan struct{})
	cancelRequest := func() {
		<-start
		cancel1()
		// getter.handleIncoming's cancel function reaches the session, whose
		// sessionWantSender calls SessionManager.CancelSessionWants.
		if slices.Contains(sim.RemoveSessionWants(regressionSession, k), b.Cid()) {
			cancels = append(cancels, "the cancelled request")
		}
	}
	arrive := func() {
		<-start
		// Client.receiveBlocksFrom.
		wanted, _ := sim.SplitWantedUnwanted([]blocks.Block{b})
		ps.Publish(peer.ID("peer A"), wanted...)
	}
	var wg sync.WaitGroup
	if cancelFirst {
		wg.Go(cancelRequest)
		wg.Go(arrive)
	} else {
		wg.Go(arrive)
		wg.Go(cancelRequest)
	}
	close(start)
	wg.Wait()
	return cancels
}

// readAll reads ch until it is closed, failing if that takes too long.
func readAll(ch <-chan blocks.Block) ([]blocks.Block, error) {
	var got []blocks.Block
	timeout := time.After(30 * time.Second)
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				return got, nil
			}
			got = append(got, b)
		case <-timeout:
			return got, fmt.Errorf("channel not closed after 30s with %d blocks: hung", len(got))
		}
	}
}
