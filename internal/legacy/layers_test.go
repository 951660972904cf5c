package legacy

import (
	"context"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// spyPubSub is a PubSub that records what the Client asks of it.
type spyPubSub struct {
	*PubSub
	mu        sync.Mutex
	from      []peer.ID
	subscribe int
	shutdown  int
}

func (p *spyPubSub) Publish(from peer.ID, blks ...blocks.Block) {
	p.mu.Lock()
	p.from = append(p.from, from)
	p.mu.Unlock()
	p.PubSub.Publish(from, blks...)
}

func (p *spyPubSub) Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block {
	p.mu.Lock()
	p.subscribe++
	p.mu.Unlock()
	return p.PubSub.Subscribe(ctx, keys...)
}

func (p *spyPubSub) Shutdown() {
	p.mu.Lock()
	p.shutdown++
	p.mu.Unlock()
	p.PubSub.Shutdown()
}

// spyInterests is a SessionInterests without a Size method that records the
// sessions whose interest the Client records.
type spyInterests struct {
	SessionInterests
	mu       sync.Mutex
	recorded []uint64
}

func (s *spyInterests) RecordSessionInterest(ses uint64, ks []cid.Cid) {
	s.mu.Lock()
	s.recorded = append(s.recorded, ses)
	s.mu.Unlock()
	s.SessionInterests.RecordSessionInterest(ses, ks)
}

func TestClient_WithLayersCallsTheGivenLayers(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	ps := &spyPubSub{PubSub: NewPubSub()}
	sim := &spyInterests{SessionInterests: NewSessionInterestManager()}
	c := NewClient(newStore(), WithLayers(ps, sim))
	s := c.NewSession(7)
	b := mkBlock("one")

	out, err := s.GetBlocks(ctx, b.Cid())
	require.NoError(t, err)
	require.NoError(t, c.ReceiveMessage(ctx, "peerA", []blocks.Block{b}, nil, nil))
	assert.Equal(t, []blocks.Block{b}, drain(t, out))
	recv(t, s.Updates())

	k, p := c.InterestSize()
	assert.Zero(t, k+p, "a SessionInterests without Size counts nothing")
	c.Close()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	assert.Equal(t, []peer.ID{"peerA"}, ps.from, "Publish gets the sender")
	assert.Equal(t, 1, ps.subscribe)
	assert.Equal(t, 1, ps.shutdown, "Close shuts the given PubSub down")
	sim.mu.Lock()
	defer sim.mu.Unlock()
	assert.Equal(t, []uint64{7}, sim.recorded)
}

func TestClient_WithLayersNilKeepsTheReproductions(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := NewClient(newStore(), WithLayers(nil, nil))
	defer c.Close()
	assert.IsType(t, (*PubSub)(nil), c.notif)
	assert.IsType(t, (*SessionInterestManager)(nil), c.sim)
	_, err := c.NewSession(1).GetBlocks(context.Background(), mkBlock("x").Cid())
	require.NoError(t, err)
	requireInterest(t, c, 1, 1)
}

// shortPubSub is a PubSub whose Subscribe returns a channel that the test
// closes early, as bitswapcompat's does for a call whose store failed.
type shortPubSub struct {
	*PubSub
	ch chan blocks.Block
}

func (p *shortPubSub) Subscribe(context.Context, ...cid.Cid) <-chan blocks.Block { return p.ch }

// A GetBlocks call whose PubSub channel closes early with keys missing
// calls the function of WithCutShortFunc with those keys, before the
// session ends their wants (the CANCEL); one that its ctx ends does not.
func TestSession_CutShortCallReportsItsMissingKeysBeforeTheCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, cut := range []bool{true, false} {
		ps := &shortPubSub{PubSub: NewPubSub(), ch: make(chan blocks.Block)}
		cancels := newCancelLog()
		c := NewClient(nil, WithLayers(ps, nil), cancels.option())
		s := c.NewSession(1)
		var wg sync.WaitGroup
		drainUpdates(s, &wg)
		a, b := mkBlock("a"), mkBlock("b")
		reported := make(chan []cid.Cid, 1)
		cancelsBefore := -1 // CANCELs sent when the function ran
		ctx, cancel := context.WithCancel(context.Background())
		out, err := s.GetBlocks(WithCutShortFunc(ctx, func(keys []cid.Cid) {
			cancelsBefore = len(cancels.ch)
			reported <- keys
		}), a.Cid(), b.Cid())
		require.NoError(t, err)
		if cut {
			close(ps.ch)
		} else {
			cancel()
		}
		assert.Empty(t, drain(t, out))
		assert.ElementsMatch(t, []cid.Cid{a.Cid(), b.Cid()}, recv(t, cancels.ch), "the session's CANCEL")
		if cut {
			assert.ElementsMatch(t, []cid.Cid{a.Cid(), b.Cid()}, recv(t, reported))
			assert.Zero(t, cancelsBefore, "the CANCEL came before the report")
		} else {
			assert.Empty(t, reported, "a call that its ctx ended is not cut short")
		}
		cancel()
		c.Close()
		wg.Wait()
	}
}
