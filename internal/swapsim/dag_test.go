package swapsim

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

func TestDecodeChildren_RoundTrip(t *testing.T) {
	d := newDAG(7, rand.New(rand.NewPCG(1, 2)), ptr(DefaultConfig()))
	for i, n := range d.nodes {
		kids, err := decodeChildren(n.blk.RawData())
		require.NoError(t, err)
		want := make([]cid.Cid, len(n.children))
		for j, c := range n.children {
			want[j] = d.nodes[c].blk.Cid()
		}
		require.Equal(t, want, kids, "node %d", i)
		require.Equal(t, int32(i), d.index[n.blk.Cid()])
	}
}

func TestDecodeChildren_Malformed(t *testing.T) {
	for _, data := range [][]byte{nil, {5}, {1, 40, 1, 2}, {1, 2, 0xff, 0xff}} {
		_, err := decodeChildren(data)
		require.ErrorIs(t, err, errBadNode, "%x", data)
	}
}

func TestNewDAG_DeterministicShape(t *testing.T) {
	cfg := DefaultConfig()
	a := newDAG(9, rand.New(rand.NewPCG(3, 4)), &cfg)
	b := newDAG(9, rand.New(rand.NewPCG(3, 4)), &cfg)
	require.Equal(t, a.nodes[0].blk.Cid(), b.nodes[0].blk.Cid())
	c := newDAG(10, rand.New(rand.NewPCG(3, 4)), &cfg)
	require.NotEqual(t, a.nodes[0].blk.Cid(), c.nodes[0].blk.Cid(), "the DAG ID makes blocks distinct")
}

func TestNewDAG_Holders(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LocalOnly, cfg.Peers = 0.5, 5
	d := newDAG(1, rand.New(rand.NewPCG(5, 6)), &cfg)
	require.NotZero(t, d.nodes[0].holders, "the root is never local-only")
	localOnly := 0
	for _, n := range d.nodes {
		require.Zero(t, n.holders>>cfg.Peers, "holders are peers 0..Peers-1")
		if n.holders == 0 {
			localOnly++
		}
	}
	require.NotZero(t, localOnly)
}

func TestPickPeer_StaysInSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	set := uint64(0b1010_0110)
	seen := uint64(0)
	for range 1000 {
		p := pickPeer(rng, set)
		require.NotZero(t, set&(1<<p))
		seen |= 1 << p
	}
	require.Equal(t, set, seen)
	for range 100 {
		require.NotZero(t, randomHolders(rng, maxPeers))
		h := randomHolders(rng, 3)
		require.NotZero(t, h)
		require.LessOrEqual(t, bits.Len64(h), 3)
	}
}

func TestRegistry_SharesAndRetires(t *testing.T) {
	var r registry
	cfg := DefaultConfig()
	cfg.Share, cfg.Refetch = 1, 0
	rng := rand.New(rand.NewPCG(1, 1))
	n := 0
	fresh := func() *dag { n++; return &dag{id: uint64(n), pos: -1} }
	a := r.acquire(rng, &cfg, fresh)
	b := r.acquire(rng, &cfg, fresh)
	require.Same(t, a, b, "Share 1 joins the active DAG")
	r.release(a, false)
	r.release(b, true)
	require.Empty(t, r.active)
	require.Equal(t, []*dag{a}, r.completed)
	cfg.Share, cfg.Refetch = 0, 1
	require.Same(t, a, r.acquire(rng, &cfg, fresh), "Refetch 1 fetches a complete DAG")
}

func ptr[T any](v T) *T { return &v }
