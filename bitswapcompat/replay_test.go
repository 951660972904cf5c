package bitswapcompat

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
)

// client replays, in the order boxo's bitswap client (v0.43) makes them, the
// calls that reach its pubsub and its SessionInterestManager. Each method
// names the client code it stands for.
type client struct {
	ps  *PubSub
	sim *SessionInterestManager

	mu      sync.Mutex
	cancels []cid.Cid // what SessionManager.cancelWants would CANCEL
}

func newClient(bs *faultyStore) *client {
	var ps *PubSub
	var sim *SessionInterestManager
	if bs == nil {
		ps, sim = New(nil)
	} else {
		ps, sim = New(bs)
	}
	return &client{ps: ps, sim: sim}
}

// sessionView is what one Session.ReceiveFrom keeps after
// FilterSessionInterested.
type sessionView struct{ blks, haves, dontHaves []cid.Cid }

// getBlocks is Session.GetBlocks: getter.AsyncGetBlocks subscribes, then the
// session's run loop (wantBlocks) records the interest and sends WANTs.
func (c *client) getBlocks(ctx context.Context, ses uint64, keys ...cid.Cid) <-chan blocks.Block {
	ch := c.ps.Subscribe(ctx, keys...)
	c.sim.RecordSessionInterest(ses, keys)
	return ch
}

// receive is Client.receiveBlocksFrom for a message from a peer: split, hand
// the keys to the sessions (SessionManager.ReceiveFrom), publish the wanted
// blocks.
func (c *client) receive(from peer.ID, blks []blocks.Block, haves, dontHaves []cid.Cid) ([]blocks.Block, map[uint64]sessionView) {
	wanted, _ := c.sim.SplitWantedUnwanted(blks)
	seen := c.receiveFrom(cidsOf(blks...), haves, dontHaves)
	c.ps.Publish(from, wanted...)
	return wanted, seen
}

// receiveFrom is SessionManager.ReceiveFrom, with Session.ReceiveFrom for
// each interested session.
func (c *client) receiveFrom(ks, haves, dontHaves []cid.Cid) map[uint64]sessionView {
	keys := c.sim.FilterInterests(ks, haves, dontHaves)
	seen := make(map[uint64]sessionView)
	for _, id := range c.sim.InterestedSessions(keys[0], keys[1], keys[2]) {
		r := c.sim.FilterSessionInterested(id, keys[0], keys[1], keys[2])
		seen[id] = sessionView{r[0], r[1], r[2]}
	}
	return seen
}

// notifyNewBlocks is Client.NotifyNewBlocks: a block added locally.
func (c *client) notifyNewBlocks(blks ...blocks.Block) map[uint64]sessionView {
	seen := c.receiveFrom(cidsOf(blks...), nil, nil)
	var zero peer.ID
	c.ps.Publish(zero, blks...)
	return seen
}

// cancelSessionWants is SessionManager.CancelSessionWants: a session got its
// blocks (handleReceive) or a request was cancelled.
func (c *client) cancelSessionWants(ses uint64, keys ...cid.Cid) []cid.Cid {
	ks := c.sim.RemoveSessionWants(ses, keys)
	c.mu.Lock()
	c.cancels = append(c.cancels, ks...)
	c.mu.Unlock()
	return ks
}

// removeSession is SessionManager.RemoveSession: a session shut down.
func (c *client) removeSession(ses uint64) []cid.Cid {
	ks := c.sim.RemoveSession(ses)
	c.mu.Lock()
	c.cancels = append(c.cancels, ks...)
	c.mu.Unlock()
	return ks
}

func TestReplay_MessageWithBlocksHavesAndDontHaves(t *testing.T) {
	c := newClient(memStore())
	defer c.ps.Shutdown()
	b := newBlocks(t, 6)
	k := cidsOf(b...)
	ch1 := c.getBlocks(t.Context(), 1, k[0], k[1], k[2])
	ch2 := c.getBlocks(t.Context(), 2, k[2], k[3])

	wanted, seen := c.receive(peerA, []blocks.Block{b[0], b[2], b[5]}, []cid.Cid{k[1], k[4]}, []cid.Cid{k[3], k[5]})
	require.Equal(t, []blocks.Block{b[0], b[2]}, wanted)
	require.Equal(t, map[uint64]sessionView{
		1: {blks: []cid.Cid{k[0], k[2]}, haves: []cid.Cid{k[1]}},
		2: {blks: []cid.Cid{k[2]}, dontHaves: []cid.Cid{k[3]}},
	}, seen)
	requireReceived(t, ch1, false, b[0], b[2])
	requireReceived(t, ch2, false, b[2])

	// The sessions' run loops handle the blocks (handleReceive).
	require.Equal(t, k[:1], c.cancelSessionWants(1, k[0], k[2]))
	require.Equal(t, k[2:3], c.cancelSessionWants(2, k[2]))

	// A second peer sends the rest, and a duplicate of b[0].
	wanted, seen = c.receive(peerB, []blocks.Block{b[1], b[0], b[3]}, nil, nil)
	require.Equal(t, []blocks.Block{b[1], b[3]}, wanted)
	require.Equal(t, map[uint64]sessionView{1: {blks: k[1:2]}, 2: {blks: k[3:4]}}, seen)
	requireReceived(t, ch1, true, b[1])
	requireReceived(t, ch2, true, b[3])
	require.Equal(t, k[1:2], c.cancelSessionWants(1, k[1]))
	require.Equal(t, k[3:4], c.cancelSessionWants(2, k[3]))

	require.Empty(t, c.removeSession(1))
	require.Empty(t, c.removeSession(2))
	require.ElementsMatch(t, k[:4], c.cancels, "each wanted key cancelled once")
	requireIdle(t, c.ps, c.sim)
}

func TestReplay_BlockAddedLocally(t *testing.T) {
	store := memStore()
	c := newClient(store)
	defer c.ps.Shutdown()
	b := newBlocks(t, 3)
	k := cidsOf(b...)
	ch := c.getBlocks(t.Context(), 1, k[0], k[1])

	seen := c.notifyNewBlocks(b[0], b[2]) // b[2]: nobody wants it yet
	require.Equal(t, map[uint64]sessionView{1: {blks: k[:1]}}, seen)
	requireReceived(t, ch, false, b[0])
	require.Equal(t, k[:1], c.cancelSessionWants(1, k[0]))
	for _, key := range []cid.Cid{k[0], k[2]} {
		has, err := store.Has(t.Context(), key)
		require.NoError(t, err)
		require.True(t, has, "local blocks are stored")
	}

	// A remote copy arrives late: nobody wants it any more.
	wanted, seen := c.receive(peerA, b[:1], nil, nil)
	require.Empty(t, wanted)
	require.Empty(t, seen)

	// A request for b[2] finds it in the blockstore, inside its subscription.
	// The session still sends its WANT (boxo does not know better), and still
	// gets the CANCEL for it.
	ch2 := c.getBlocks(t.Context(), 1, k[2])
	requireReceived(t, ch2, true, b[2])
	require.Equal(t, [][]cid.Cid{k[1:]}, c.sim.FilterSessionInterested(1, k))
	require.Equal(t, k[2:], c.cancelSessionWants(1, k[2]))

	// The session ends while its request still waits for k[1]: as in boxo,
	// the CANCEL is due at once, and nothing is left for a later call.
	require.Equal(t, k[1:2], c.removeSession(1))
	requireReceived(t, ch, false)
	wanted, _ = c.receive(peerB, b[1:2], nil, nil)
	require.Equal(t, b[1:2], wanted, "the request still waits for it")
	requireReceived(t, ch, true, b[1])
	require.Empty(t, c.removeSession(1))
	require.ElementsMatch(t, k, c.cancels, "each key cancelled once")
	requireIdle(t, c.ps, c.sim)
}

// Two requests of one session want the same key; one is cancelled. The
// session's RemoveSessionWants ends its interest and returns the key at once,
// as boxo's does; the other request must still get its block.
func TestReplay_TwoRequestsOneCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newClient(nil)
		defer c.ps.Shutdown()
		b := newBlocks(t, 1)
		k := b[0].Cid()
		ctx1, cancel1 := context.WithCancel(t.Context())
		r1 := c.getBlocks(ctx1, 1, k)
		r2 := c.getBlocks(t.Context(), 1, k)

		cancel1()
		synctest.Wait()
		requireReceived(t, r1, true)
		// getter.handleIncoming's cancel function reaches the session, which
		// cancels its want: the session's last interest, so the CANCEL is due
		// although r2 still waits.
		require.Equal(t, []cid.Cid{k}, c.cancelSessionWants(1, k))

		wanted, seen := c.receive(peerA, b, nil, nil)
		require.Equal(t, b, wanted, "r2 waits for it")
		require.Empty(t, seen, "no session is interested any more")
		requireReceived(t, r2, true, b[0])

		require.Empty(t, c.removeSession(1), "nothing was held back")
		require.Equal(t, []cid.Cid{k}, c.cancels)
		requireIdle(t, c.ps, c.sim)
	})
}

// A session shuts down while blocks arrive for it: its request ends with what
// it got, its keys are cancelled, and what arrives later is dropped.
func TestReplay_SessionShutsDownWhileBlocksArrive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := memStore()
		c := newClient(store)
		defer c.ps.Shutdown()
		b := newBlocks(t, 4)
		k := cidsOf(b...)
		sessCtx, shutdown := context.WithCancel(t.Context())
		ch := c.getBlocks(sessCtx, 1, k...)

		c.receive(peerA, b[:1], nil, nil)
		shutdown() // Session.Close: the request's ctx is done
		synctest.Wait()
		requireReceived(t, ch, true, b[0])

		// b[1] arrives before the session's run loop calls RemoveSession: the
		// session still wants it, so it is stored, as boxo would.
		wanted, seen := c.receive(peerB, b[1:2], nil, nil)
		require.Equal(t, b[1:2], wanted)
		require.Equal(t, map[uint64]sessionView{1: {blks: k[1:2]}}, seen)
		require.ElementsMatch(t, k, c.removeSession(1))

		wanted, seen = c.receive(peerA, b[2:], nil, k[3:])
		require.Empty(t, wanted)
		require.Empty(t, seen)
		has, err := store.Has(t.Context(), k[2])
		require.NoError(t, err)
		require.False(t, has, "an unwanted remote block is not stored")
		requireIdle(t, c.ps, c.sim)
	})
}

// The same, with the blocks arriving concurrently and a second session that
// shares the keys and must get all of them.
func TestReplay_SessionShutsDownWhileBlocksArriveConcurrently(t *testing.T) {
	for range 20 {
		c := newClient(nil)
		b := newBlocks(t, 64)
		k := cidsOf(b...)
		sessCtx, shutdown := context.WithCancel(t.Context())
		ch1 := c.getBlocks(sessCtx, 1, k...)
		ch2 := c.getBlocks(t.Context(), 2, k...)

		var wg sync.WaitGroup
		for i := range 4 {
			from := peer.ID(rune('a' + i))
			wg.Go(func() {
				for j := i; j < len(b); j += 4 {
					_, seen := c.receive(from, b[j:j+1], k[j:j+1], nil)
					for ses, v := range seen {
						c.cancelSessionWants(ses, v.blks...)
					}
				}
			})
		}
		wg.Go(func() {
			shutdown()
			c.removeSession(1)
		})
		wg.Wait()

		// Each block was delivered inside a receive, and all are done.
		requireReceived(t, ch2, true, b...)
		for range ch1 { // closed by shutdown or by the last block
		}
		c.removeSession(2)
		c.ps.Shutdown()
		requireIdle(t, c.ps, c.sim)
	}
}

// Client.Close: the sessions close (their RemoveSession calls come later,
// from their run loops), then the pubsub shuts down while requests wait.
func TestReplay_ShutdownWhileSubscribersWait(t *testing.T) {
	c := newClient(memStore())
	b := newBlocks(t, 3)
	k := cidsOf(b...)
	waiters := []<-chan blocks.Block{
		c.getBlocks(t.Context(), 1, k[0], k[1]),
		c.getBlocks(t.Context(), 1, k[1]),
		c.getBlocks(context.Background(), 2, k[1], k[2]),
	}
	c.receive(peerA, b[:1], nil, nil)

	var readers sync.WaitGroup
	for _, ch := range waiters {
		readers.Go(func() {
			for range ch { // blocked here until Shutdown
			}
		})
	}
	c.ps.Shutdown()
	readers.Wait()

	// Shutdown closed the Notifier, which ended the sessions too.
	require.Empty(t, c.removeSession(1))
	require.Empty(t, c.removeSession(2))
	c.receive(peerB, b[1:], nil, nil) // after Shutdown: nothing happens
	requireIdle(t, c.ps, c.sim)
}
