package bitswapcompat

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	bstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
)

// stallPut is a blockstore whose PutMany of one key stops until released.
type stallPut struct {
	notifier.Blockstore
	key     cid.Cid
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallPut) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, b := range blks {
		if b.Cid() == s.key {
			s.once.Do(func() { close(s.entered) })
			<-s.release
		}
	}
	return s.Blockstore.PutMany(ctx, blks)
}

// G11 through the layer: RemoveSession of a session whose key is being
// stored waits for that PutMany, and nothing else does: other sessions are
// recorded, queried and removed meanwhile. (RemoveSession used to hold the
// manager's lock while it waited, which stalled every session.)
func TestSIM_RemoveSessionWaitingForAStoreHoldsUpNoOtherSession(t *testing.T) {
	all := newBlocks(t, 51)
	b, others := all[0], all[1:]
	st := &stallPut{
		Blockstore: bstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore())),
		key:        b.Cid(), entered: make(chan struct{}), release: make(chan struct{}),
	}
	ps, sim := New(st)
	defer ps.Shutdown()
	sim.RecordSessionInterest(1, cidsOf(b))
	published := make(chan struct{})
	go func() { defer close(published); ps.Publish(peerA, b) }() // wanted by session 1: stored
	<-st.entered
	removed := make(chan []cid.Cid, 1)
	go func() { removed <- sim.RemoveSession(1) }()

	// Whenever RemoveSession gets to wait for the PutMany, the other
	// sessions must go on; try for a while.
	for i, o := range others {
		ses := uint64(100 + i)
		done := make(chan struct{})
		go func() {
			defer close(done)
			sim.RecordSessionInterest(ses, cidsOf(o))
			require.Equal(t, []uint64{ses}, sim.InterestedSessions(cidsOf(o)))
			require.Equal(t, cidsOf(o), sim.RemoveSession(ses))
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			close(st.release)
			t.Fatalf("session %d waited for a stalled PutMany of another session's key", ses)
		}
		runtime.Gosched()
	}
	select {
	case <-removed:
		t.Fatal("RemoveSession(1) returned while its key's PutMany was stalled")
	default:
	}
	close(st.release)
	<-published
	require.Equal(t, cidsOf(b), <-removed)
	requireIdle(t, ps, sim)
}
