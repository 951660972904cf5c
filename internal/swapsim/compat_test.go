package swapsim

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/bitswapcompat"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// addOnMiss is a blockstore whose first Get of key, once it has missed, runs
// add: a local add that lands between a GetBlocks' check and its Subscribe.
type addOnMiss struct {
	notifier.Blockstore
	key  cid.Cid
	add  func()
	done atomic.Bool
}

func (s *addOnMiss) Get(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	b, err := s.Blockstore.Get(ctx, k)
	if err != nil && k == s.key && s.done.CompareAndSwap(false, true) {
		s.add()
	}
	return b, err
}

// A block added locally between the client's blockstore check and its
// Subscribe is lost to legacy (its PubSub delivers only what is published
// after Subscribe); compat's Notifier checks the blockstore inside the
// subscription, so the session gets it.
func TestCompat_BlockAddedAfterTheCheckArrives(t *testing.T) {
	blk := blocks.NewBlock([]byte("added between the check and the Subscribe"))
	var impl Impl
	bs := &addOnMiss{
		Blockstore: blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore())),
		key:        blk.Cid(),
		add: func() {
			require.NoError(t, impl.Receive(t.Context(), notifier.ResponseMessage{Blocks: []blocks.Block{blk}}))
		},
	}
	var cancels atomic.Int64
	impl = newCompatImpl(bs, func(keys []cid.Cid) { cancels.Add(int64(len(keys))) })
	defer func() { require.NoError(t, impl.Close()) }()
	sess, err := impl.NewSession(1)
	require.NoError(t, err)
	require.NoError(t, sess.Want(t.Context(), []cid.Cid{blk.Cid()}))
	require.True(t, bs.done.Load(), "the local add ran inside the check")
	select {
	case m := <-sess.Incoming():
		require.Equal(t, []blocks.Block{blk}, m.Blocks)
	case <-time.After(5 * time.Second):
		t.Fatal("the block added after the check never arrived")
	}
	sess.Close()
	require.Equal(t, notifier.Stats{}, impl.Interest())
	require.Equal(t, int64(1), cancels.Load(), "the session's want of the key ended with a CANCEL")
}

// hookedInterests runs before ahead of each RecordSessionInterest.
type hookedInterests struct {
	legacy.SessionInterests
	before func()
}

func (h hookedInterests) RecordSessionInterest(ses uint64, ks []cid.Cid) {
	h.before()
	h.SessionInterests.RecordSessionInterest(ses, ks)
}

// One Want of compat makes two wants of its key: the GetBlocks call's, then
// the session's interest. A block that reaches the call in between ends the
// call's want, the key's last, with a CANCEL; the interest recorded after it
// ends at Close with a second CANCEL, which cancels the WANT that the client
// sent for the Want. So the checker allows a Want of compat two CANCELs
// (compatImpl.WantEpochs).
func TestCompat_BlockBeforeTheSessionsInterestMakesTwoCancels(t *testing.T) {
	ctx := t.Context()
	blk := blocks.NewBlock([]byte("reaches the call before the session records its interest"))
	bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	var mu sync.Mutex
	var cancels []cid.Cid
	cancelled := func() []cid.Cid {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(cancels)
	}
	ps, sim := bitswapcompat.NewWithOptions(bs, bitswapcompat.WithCancelFunc(func(keys []cid.Cid) {
		mu.Lock()
		cancels = append(cancels, keys...)
		mu.Unlock()
	}))
	var c *legacy.Client
	var once sync.Once
	arrive := func() {
		once.Do(func() { require.NoError(t, c.ReceiveMessage(ctx, "peer-00", []blocks.Block{blk}, nil, nil)) })
	}
	c = legacy.NewClient(bs, legacy.WithLayers(trackedPubSub{ps}, hookedInterests{sim, arrive}))
	impl := compatImpl{legacyImpl: legacyImpl{c}, n: bitswapcompat.NotifierOf(ps)}
	defer func() { require.NoError(t, impl.Close()) }()
	sess, err := impl.NewSession(1)
	require.NoError(t, err)

	require.NoError(t, sess.Want(ctx, []cid.Cid{blk.Cid()}))
	select {
	case m := <-sess.Incoming():
		require.Equal(t, []blocks.Block{blk}, m.Blocks)
	case <-time.After(5 * time.Second):
		t.Fatal("the block never arrived")
	}
	require.Equal(t, []cid.Cid{blk.Cid()}, cancelled(), "the call's want ended with the delivery")
	require.Equal(t, notifier.Stats{Keys: 1, Wants: 1, Subscriptions: 1}, impl.Interest(), "the session's interest is left")
	sess.Close()
	require.Equal(t, []cid.Cid{blk.Cid(), blk.Cid()}, cancelled(), "the session's interest ended at Close")
	require.Equal(t, notifier.Stats{}, impl.Interest())
}
