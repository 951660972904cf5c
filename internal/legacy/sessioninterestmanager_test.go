package legacy

import (
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
)

func keysOf(bs ...blocks.Block) []cid.Cid {
	ks := make([]cid.Cid, len(bs))
	for i, b := range bs {
		ks[i] = b.Cid()
	}
	return ks
}

func TestSessionInterestManager_FilterSessionInterested(t *testing.T) {
	m := NewSessionInterestManager()
	k := keysOf(mkBlock("a"), mkBlock("b"), mkBlock("c"))
	m.RecordSessionInterest(1, []cid.Cid{k[0], k[1]})
	m.RecordSessionInterest(2, []cid.Cid{k[2]})

	got := m.FilterSessionInterested(1, k, []cid.Cid{k[2]}, []cid.Cid{k[1], k[0]})

	assert.Equal(t, [][]cid.Cid{{k[0], k[1]}, nil, {k[1], k[0]}}, got)
}

func TestSessionInterestManager_SplitWantedUnwanted(t *testing.T) {
	m := NewSessionInterestManager()
	a, b, c := mkBlock("a"), mkBlock("b"), mkBlock("c")
	m.RecordSessionInterest(1, keysOf(a, c))
	m.RecordSessionInterest(2, keysOf(c))

	wanted, unwanted := m.SplitWantedUnwanted([]blocks.Block{a, b, c})

	assert.Equal(t, []blocks.Block{a, c}, wanted)
	assert.Equal(t, []blocks.Block{b}, unwanted)
}

func TestSessionInterestManager_InterestedSessions(t *testing.T) {
	m := NewSessionInterestManager()
	k := keysOf(mkBlock("a"), mkBlock("b"), mkBlock("c"))
	m.RecordSessionInterest(1, k[:2])
	m.RecordSessionInterest(2, k[1:2])
	m.RecordSessionInterest(3, k[2:])

	got := m.InterestedSessions(k[:1], k[1:2], k[:2])

	assert.ElementsMatch(t, []uint64{1, 2}, got)
}

func TestSessionInterestManager_FilterInterestsFiltersInPlace(t *testing.T) {
	m := NewSessionInterestManager()
	k := keysOf(mkBlock("a"), mkBlock("b"), mkBlock("c"))
	m.RecordSessionInterest(1, []cid.Cid{k[1]})
	in := []cid.Cid{k[0], k[1], k[2]}

	got := m.FilterInterests(in, nil)

	assert.Equal(t, [][]cid.Cid{{k[1]}, nil}, got)
	assert.Equal(t, k[1], in[0], "the caller's array is overwritten")
}

func TestSessionInterestManager_RemoveReturnsKeysNobodyWants(t *testing.T) {
	m := NewSessionInterestManager()
	k := keysOf(mkBlock("a"), mkBlock("b"), mkBlock("c"))
	m.RecordSessionInterest(1, k)
	m.RecordSessionInterest(2, k[1:])

	assert.Equal(t, []cid.Cid{k[0]}, m.RemoveSessionWants(1, k[:2]))
	assert.Empty(t, m.RemoveSession(1), "1 wants only c, which 2 wants too")
	keys, pairs := m.Size()
	assert.Equal(t, 2, keys)
	assert.Equal(t, 2, pairs)

	assert.ElementsMatch(t, k[1:], m.RemoveSession(2))
	keys, pairs = m.Size()
	assert.Zero(t, keys)
	assert.Zero(t, pairs)
}
