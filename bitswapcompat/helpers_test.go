package bitswapcompat

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	bstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/stretchr/testify/require"
)

// newBlocks returns n blocks distinct from those of every other test.
func newBlocks(t testing.TB, n int) []blocks.Block {
	out := make([]blocks.Block, n)
	for i := range out {
		out[i] = blocks.NewBlock(fmt.Appendf(nil, "%s/%d", t.Name(), i))
	}
	return out
}

func cidsOf(blks ...blocks.Block) []cid.Cid {
	out := make([]cid.Cid, len(blks))
	for i, b := range blks {
		out[i] = b.Cid()
	}
	return out
}

func newStore() bstore.Blockstore {
	return bstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
}

// faultyStore fails Get or PutMany while the matching switch is on.
type faultyStore struct {
	bstore.Blockstore
	failGet, failPut atomic.Bool
}

var errFault = errors.New("injected blockstore fault")

func (s *faultyStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if s.failGet.Load() {
		return nil, errFault
	}
	return s.Blockstore.Get(ctx, c)
}

func (s *faultyStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	if s.failPut.Load() {
		return errFault
	}
	return s.Blockstore.PutMany(ctx, blks)
}

// drainNow reads what ch holds without waiting and reports whether ch is
// closed.
func drainNow(ch <-chan blocks.Block) (got []blocks.Block, closed bool) {
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				return got, true
			}
			got = append(got, b)
		default:
			return got, false
		}
	}
}

// requireReceived checks that ch holds exactly want (in any order) and is
// closed or not, as closed says.
func requireReceived(t testing.TB, ch <-chan blocks.Block, closed bool, want ...blocks.Block) {
	t.Helper()
	got, isClosed := drainNow(ch)
	require.ElementsMatch(t, cidsOf(want...), cidsOf(got...))
	require.Equal(t, closed, isClosed, "channel closed")
}

// requireIdle checks that nothing is left in the Notifier or the table.
func requireIdle(t testing.TB, ps *PubSub, sim *SessionInterestManager) {
	t.Helper()
	require.Zero(t, NotifierOf(ps).Stats(), "Notifier stats")
	if sim != nil {
		keys, _ := sim.table.size()
		require.Zero(t, keys, "interest table keys")
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Empty(t, ps.calls, "live calls")
	require.Empty(t, ps.finished, "finished calls not reaped")
}
