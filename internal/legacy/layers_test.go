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
