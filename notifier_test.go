package notifier

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

func TestPublish_FiltersMessagePerSubscription(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("filter", 4)
	a, c := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, a.Subscribe(ctx, b[0].Cid(), b[1].Cid()))
	require.NoError(t, c.Subscribe(ctx, b[1].Cid(), b[2].Cid()))

	require.NoError(t, n.Publish(ctx, ResponseMessage{
		From:      "peer",
		Blocks:    []blocks.Block{b[0], b[3]},
		Haves:     []cid.Cid{b[1].Cid(), b[3].Cid()},
		DontHaves: []cid.Cid{b[2].Cid()},
	}))
	require.Equal(t, ResponseMessage{From: "peer", Blocks: []blocks.Block{b[0]}, Haves: []cid.Cid{b[1].Cid()}}, recv(t, a))
	require.Equal(t, ResponseMessage{From: "peer", Haves: []cid.Cid{b[1].Cid()}, DontHaves: []cid.Cid{b[2].Cid()}}, recv(t, c))
	none(t, a)
	none(t, c)
}

func TestPublish_MessageThatFiltersToNothingIsNotSent(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("nothing", 2)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:], Haves: []cid.Cid{b[1].Cid()}}))
	none(t, s)
}

func TestPublish_HavesDoNotEndTheWant(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("haves", 1)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	for _, p := range []string{"p1", "p2"} {
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: p, Haves: keysOf(b)}))
		require.Equal(t, ResponseMessage{From: p, Haves: keysOf(b)}, recv(t, s))
	}
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p3", DontHaves: keysOf(b)}))
	require.Equal(t, ResponseMessage{From: "p3", DontHaves: keysOf(b)}, recv(t, s))
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
	require.Empty(t, cancels.take())
}

// G1: a block already in the blockstore when Subscribe runs is delivered.
func TestSubscribe_DeliversBlockAlreadyStored(t *testing.T) {
	eachStore(t, func(t *testing.T, bs Blockstore) {
		n, cancels := newWithCancels(t, bs)
		b := mkBlocks("stored", 2)
		require.NoError(t, bs.PutMany(ctx, b[:1]))
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
		require.Equal(t, ResponseMessage{Blocks: b[:1]}, recv(t, s))
		none(t, s)
		require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
		require.Empty(t, cancels.take(), "a want satisfied inside its own Subscribe had no WANT sent")
	})
}

// G11 and G1, the mechanism: Subscribe of several keys checks the blockstore
// holding no shard lock, with its keys reserved so that no Publish of them
// fits between the check and the recording of the want.
func TestSubscribe_ChecksStoreUnlockedWithKeysReserved(t *testing.T) {
	b := mkBlocks("order", 2)
	hs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, hs, WithShards(1))
	held, reserved := map[cid.Cid]bool{}, map[cid.Cid]bool{}
	hs.onGet = func(c cid.Cid) error {
		// isReserved takes the shard lock: with it held, the check would
		// wait for ever instead of failing.
		if held[c] = n.shardHeld(c); !held[c] {
			reserved[c] = n.isReserved(c)
		}
		return nil
	}
	require.NoError(t, mustSub(t, n, 1).Subscribe(ctx, keysOf(b)...))
	for _, k := range keysOf(b) {
		require.False(t, held[k], "the blockstore check must run with no shard lock held")
		require.True(t, reserved[k], "the key must be reserved during the check")
		require.False(t, n.isReserved(k), "the reservation ends with the Subscribe")
	}
	require.Equal(t, 2, n.Stats().Wants, "the wants of missing keys are recorded")
}

// G11 and G1, the mechanism of a Subscribe of one key that nobody wants: it
// checks the blockstore holding no shard lock and reserving nothing, so an
// operation on the same key does not wait for its Get.
func TestSubscribe_OneKeyChecksStoreUnlockedUnreserved(t *testing.T) {
	b := mkBlocks("one", 2)
	hs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, hs, WithShards(1))
	var held, reserved, published bool
	gets := 0
	hs.onGet = func(c cid.Cid) error {
		if gets++; gets > 1 {
			return nil
		}
		held, reserved = n.shardHeld(c), n.isReserved(c)
		// This would deadlock if the Get held the shard or the key. It
		// touches the key, so the Subscribe starts over, reserving it.
		published = n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{c}}) == nil
		return nil
	}
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	require.False(t, held, "the blockstore check must run with no shard lock held")
	require.False(t, reserved, "a Subscribe of one key nobody wants reserves nothing")
	require.True(t, published, "a Publish of the key during the Get must not wait for it")
	require.Equal(t, 2, gets, "the Publish touched the key: the Subscribe checks again")
	require.True(t, s.Wants(b[0].Cid()), "the want of a missing key is recorded")
	gets = 2 // no more Publishes from the hook
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[1:]}))
	require.NoError(t, s.Subscribe(ctx, b[1].Cid()))
	require.Equal(t, ResponseMessage{Blocks: b[1:]}, recv(t, s), "a found block is delivered")
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
}

// G1: a Subscribe of one key starts over, reserving its key, when an
// operation touches the key between its unlocked Get and its commit. Here a
// local Publish stores the block after the Get has missed it and delivers it
// to nobody; recording the want on the strength of that miss would lose the
// block for good.
func TestSubscribe_OneKeyStartsOverIfTouchedDuringGet(t *testing.T) {
	for _, other := range []bool{false, true} {
		t.Run(fmt.Sprintf("other-key-of-the-bucket=%v", other), func(t *testing.T) {
			b := mkBlocks("touched", 1)[0]
			hs := &hookStore{Blockstore: memStore()}
			n, cancels := newWithCancels(t, hs, WithShards(1))
			pub := b
			if other { // a key of the same shard and bucket: a false alarm, handled the same way
				pub = sameBucket(t, b.Cid(), "touched-other")
			}
			gets := 0
			hs.afterGet = func(c cid.Cid) {
				if gets++; gets == 1 {
					require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{pub}}))
				}
			}
			s := mustSub(t, n, 1)
			require.NoError(t, s.Subscribe(ctx, b.Cid()))
			require.Equal(t, 2, gets, "the Subscribe must check the blockstore again")
			if other {
				require.True(t, s.Wants(b.Cid()))
				require.Equal(t, 1, n.Stats().Wants)
				return
			}
			require.Equal(t, ResponseMessage{Blocks: []blocks.Block{b}}, recv(t, s))
			require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
			require.Empty(t, cancels.take(), "a want satisfied inside its own Subscribe had no WANT sent")
		})
	}
}

// G11 and G3, the mechanism: Publish stores holding no shard lock, with every
// key of its message reserved.
func TestPublish_StoresUnlockedWithKeysReserved(t *testing.T) {
	b := mkBlocks("putlock", 3)
	hs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, hs, WithShards(1))
	held, reserved := map[cid.Cid]bool{}, map[cid.Cid]bool{}
	hs.onPutMany = func(blks []blocks.Block) error {
		for _, k := range keysOf(b) {
			if held[k] = n.shardHeld(k); !held[k] { // isReserved would wait for a held lock for ever
				reserved[k] = n.isReserved(k)
			}
		}
		return nil
	}
	require.NoError(t, mustSub(t, n, 1).Subscribe(ctx, b[0].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[:2], Haves: []cid.Cid{b[2].Cid()}}))
	for _, k := range keysOf(b) {
		require.False(t, held[k], "shard of %s held during PutMany", k)
	}
	require.Equal(t, map[cid.Cid]bool{b[0].Cid(): true, b[1].Cid(): true, b[2].Cid(): true}, reserved)
	for _, k := range keysOf(b) {
		require.False(t, n.isReserved(k), "the reservations end with the Publish")
	}
}

// G1: a local Publish racing a Subscribe of the same key always ends in
// exactly one delivery.
func TestLocalPublishRacingSubscribe_AlwaysDelivers(t *testing.T) {
	eachStore(t, func(t *testing.T, bs Blockstore) {
		n, _ := newWithCancels(t, bs)
		rounds := 300
		if testing.Short() {
			rounds = 50
		}
		for i := range rounds {
			b := mkBlocks(fmt.Sprintf("race-local-%d", i), 1)
			s := mustSub(t, n, uint64(i))
			var wg sync.WaitGroup
			wg.Go(func() { assert.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b})) })
			wg.Go(func() { assert.NoError(t, s.Subscribe(ctx, b[0].Cid())) })
			wg.Wait()
			require.Equal(t, ResponseMessage{Blocks: b}, recv(t, s), "round %d", i)
			none(t, s)
			s.Remove()
		}
	})
}

// G1/G4: a remote Publish racing a Subscribe ends in delivery, or with the
// block neither stored nor delivered; never stored but not delivered.
func TestRemotePublishRacingSubscribe_NeverStoredButNotDelivered(t *testing.T) {
	eachStore(t, func(t *testing.T, bs Blockstore) {
		n, _ := newWithCancels(t, bs)
		delivered, dropped := 0, 0
		for i := range 300 {
			b := mkBlocks(fmt.Sprintf("race-remote-%d", i), 1)
			s := mustSub(t, n, uint64(i))
			var wg sync.WaitGroup
			wg.Go(func() { assert.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b})) })
			wg.Go(func() { assert.NoError(t, s.Subscribe(ctx, b[0].Cid())) })
			wg.Wait()
			has, err := bs.Has(ctx, b[0].Cid())
			require.NoError(t, err)
			if has {
				delivered++
				require.Equal(t, ResponseMessage{From: "peer", Blocks: b}, recv(t, s), "round %d: stored but not delivered", i)
			} else {
				dropped++
				none(t, s)
				require.Equal(t, 1, n.Stats().Wants, "round %d: want lost", i)
			}
			s.Remove()
		}
		t.Logf("delivered %d, published before the want %d", delivered, dropped)
	})
}

// G2: a block is delivered once per want, whatever the duplicates.
func TestPublish_DuplicateBlocksDeliveredOnce(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("dup", 1)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid(), b[0].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p1", Blocks: []blocks.Block{b[0], b[0]}, Haves: []cid.Cid{b[0].Cid(), b[0].Cid()}}))
	require.Equal(t, ResponseMessage{From: "p1", Blocks: b, Haves: keysOf(b)}, recv(t, s))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p2", Blocks: b}))
	none(t, s)
	require.Equal(t, keysOf(b), cancels.take())
}

// G2: several peers sending the same block at once wake the subscriber once.
func TestConcurrentPeersSendingOneBlock_DeliveredOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, bs Blockstore) {
		n, _ := newWithCancels(t, bs)
		for i := range 100 {
			b := mkBlocks(fmt.Sprintf("peers-%d", i), 1)
			s := mustSub(t, n, uint64(i))
			require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
			var wg sync.WaitGroup
			for p := range 8 {
				wg.Go(func() {
					require.NoError(t, n.Publish(ctx, ResponseMessage{From: fmt.Sprint("peer", p), Blocks: b}))
				})
			}
			wg.Wait()
			require.Equal(t, b, recv(t, s).Blocks)
			none(t, s)
			s.Remove()
		}
	})
}

// G2: a block published while the blockstore check of the same key runs is
// not delivered a second time.
func TestPublishDuringStoreCheck_DeliveredOnce(t *testing.T) {
	b := mkBlocks("during-check", 1)
	hs := &hookStore{Blockstore: memStore()}
	require.NoError(t, hs.PutMany(ctx, b))
	n, _ := newWithCancels(t, hs)
	published := make(chan struct{})
	var once sync.Once // the Publish moves the key's version: the one-key Subscribe may check again
	hs.onGet = func(cid.Cid) error {
		once.Do(func() {
			go func() {
				defer close(published)
				require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b}))
			}()
		})
		return nil
	}
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	done(t, published, "Publish after Subscribe")
	require.Equal(t, ResponseMessage{Blocks: b}, recv(t, s))
	none(t, s)
}

// G3: when a subscriber receives a block, the blockstore already has it.
func TestDelivery_BlockIsStoredWhenReceived(t *testing.T) {
	eachStore(t, func(t *testing.T, bs Blockstore) {
		n, _ := newWithCancels(t, bs)
		b := mkBlocks("stored-first", 8)
		var mu sync.Mutex
		var missing []cid.Cid
		fs, err := n.NewSubscriptionFunc(1, func(m ResponseMessage) {
			for _, blk := range m.Blocks {
				if ok, err := bs.Has(ctx, blk.Cid()); err != nil || !ok {
					mu.Lock()
					missing = append(missing, blk.Cid())
					mu.Unlock()
				}
			}
		})
		require.NoError(t, err)
		s := mustSub(t, n, 2)
		require.NoError(t, fs.Subscribe(ctx, keysOf(b)...))
		require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
		var wg sync.WaitGroup
		for i := range b {
			wg.Go(func() { assert.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[i : i+1]})) })
		}
		for range b {
			m := recv(t, s)
			ok, err := bs.Has(ctx, m.Blocks[0].Cid())
			require.NoError(t, err)
			require.True(t, ok, "received %s before it was stored", m.Blocks[0].Cid())
		}
		wg.Wait()
		require.Empty(t, missing)
	})
}

// G3: a failed PutMany delivers nothing and loses no want.
func TestPublish_FailedStoreDeliversNothingKeepsWants(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, hs)
	b := mkBlocks("putfail", 2)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	before := n.Stats()

	hs.onPutMany = func([]blocks.Block) error { return errBoom }
	err := n.Publish(ctx, ResponseMessage{From: "p", Blocks: b, Haves: keysOf(b)})
	require.ErrorIs(t, err, errBoom)
	require.ErrorContains(t, err, "notifier: publish")
	none(t, s)
	require.Equal(t, before, n.Stats())
	require.Empty(t, cancels.take())

	hs.onPutMany = nil
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b}))
	require.Equal(t, b, recv(t, s).Blocks)
}

// G4: remote blocks nobody wants are neither stored nor delivered; local
// blocks always are stored.
func TestPublish_StoresRemoteBlocksOnlyIfWanted(t *testing.T) {
	eachStore(t, func(t *testing.T, bs Blockstore) {
		n, _ := newWithCancels(t, bs)
		b := mkBlocks("unsolicited", 3)
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[:2]}))
		require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[2:]}))
		for i, want := range []bool{true, false, true} {
			has, err := bs.Has(ctx, b[i].Cid())
			require.NoError(t, err)
			require.Equal(t, want, has, "block %d", i)
		}
		require.Equal(t, b[:1], recv(t, s).Blocks)
		none(t, s)
	})
}

// Subscribe delivers a stored block to every subscription still waiting for
// it, and reports the key: the others had sent WANTs.
func TestSubscribe_StoredBlockReachesOtherWaiters(t *testing.T) {
	bs := memStore()
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("others", 1)
	a, c := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, a.Subscribe(ctx, b[0].Cid()))
	require.NoError(t, bs.PutMany(ctx, b)) // stored behind the Notifier's back
	require.NoError(t, c.Subscribe(ctx, b[0].Cid()))
	require.Equal(t, ResponseMessage{Blocks: b}, recv(t, a))
	require.Equal(t, ResponseMessage{Blocks: b}, recv(t, c))
	require.Equal(t, keysOf(b), cancels.take())
	require.Equal(t, Stats{Subscriptions: 2}, n.Stats())
}

// Subscribe is all-or-nothing when the blockstore fails.
func TestSubscribe_StoreErrorRollsBack(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, hs)
	b := mkBlocks("rollback", 3)
	other := mustSub(t, n, 2)
	require.NoError(t, other.Subscribe(ctx, b[1].Cid()))
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	before := n.Stats()

	hs.onGet = func(c cid.Cid) error {
		if c == b[2].Cid() {
			return errBoom
		}
		return nil
	}
	err := s.Subscribe(ctx, b[1].Cid(), b[2].Cid(), b[0].Cid())
	require.ErrorIs(t, err, errBoom)
	require.ErrorContains(t, err, b[2].Cid().String())
	require.Equal(t, before, n.Stats())
	require.Empty(t, cancels.take())

	hs.onGet = nil
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b}))
	require.Equal(t, b[:1], recv(t, s).Blocks, "only the want from before the failed call remains")
	require.Equal(t, b[1:2], recv(t, other).Blocks)
	none(t, s)
}

func TestSubscribe_CanceledContextChangesNothing(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	s := mustSub(t, n, 1)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, s.Subscribe(cctx, mkBlocks("ctx", 1)[0].Cid()), context.Canceled)
	require.ErrorIs(t, n.Publish(cctx, ResponseMessage{Blocks: mkBlocks("ctx", 1)}), context.Canceled)
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// New(nil) only notifies: nothing is stored, nothing is checked.
func TestNotifyOnly(t *testing.T) {
	n, cancels := newWithCancels(t, nil)
	b := mkBlocks("notify-only", 2)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	none(t, s)
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b}))
	require.Equal(t, b, recv(t, s).Blocks)
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: mkBlocks("local", 1)}))
	require.Equal(t, sorted(keysOf(b)...), cancels.take())
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// A local block that nobody wants, repeated in one message, is stored once:
// PutMany gets each block once, in short messages and in long ones.
func TestPublish_RepeatedLocalBlockStoredOnce(t *testing.T) {
	for _, n := range []int{1, 40} {
		b := mkBlocks(fmt.Sprintf("repeat-%d", n), n)
		hs := &hookStore{Blockstore: memStore()}
		var put []cid.Cid
		hs.onPutMany = func(blks []blocks.Block) error {
			put = append(put, keysOf(blks)...)
			return nil
		}
		nt, _ := newWithCancels(t, hs)
		msg := append(append(slices.Clone(b), b...), b[0])
		require.NoError(t, nt.Publish(ctx, ResponseMessage{Blocks: msg}))
		require.Equal(t, sorted(keysOf(b)...), sorted(put...), "each block once (%d blocks)", n)
	}
}

// After Close, bad input is still refused as bad input: validation comes
// before the closed check, as the docs of Publish and Subscribe say.
func TestClose_BadInputStillGetsItsError(t *testing.T) {
	n := New(memStore())
	s := mustSub(t, n, 1)
	require.NoError(t, n.Close())
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{nil}}), ErrNilBlock)
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Haves: []cid.Cid{cid.Undef}}), ErrInvalidCid)
	require.ErrorIs(t, s.Subscribe(ctx, cid.Undef), ErrInvalidCid)
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: mkBlocks("closed", 1)}), ErrClosed)
	require.ErrorIs(t, s.Subscribe(ctx, mkBlocks("closed", 1)[0].Cid()), ErrClosed)
}
