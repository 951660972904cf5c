package notifier

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/waitmu"
)

// The Subscribe of one key that nobody wants calls Get holding no lock and
// reserving nothing (Subscription.subscribeOne). These tests park its Get,
// and a PutMany, in a synctest bubble, and run other operations meanwhile.

// parkStore parks its first gets Gets until the test sends on getRel, and its
// first puts PutManys until it sends on putRel, before they read or write.
type parkStore struct {
	Blockstore
	mu             sync.Mutex
	gets, puts     int
	getRel, putRel chan struct{}
}

func newParkStore(gets, puts int) *parkStore {
	return &parkStore{
		Blockstore: memStore(), gets: gets, puts: puts,
		getRel: make(chan struct{}), putRel: make(chan struct{}),
	}
}

func (p *parkStore) park(left *int, rel chan struct{}) {
	p.mu.Lock()
	park := *left > 0
	if park {
		*left--
	}
	p.mu.Unlock()
	if park {
		<-rel
	}
}

func (p *parkStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	p.park(&p.gets, p.getRel)
	return p.Blockstore.Get(ctx, c)
}

func (p *parkStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	p.park(&p.puts, p.putRel)
	return p.Blockstore.PutMany(ctx, blks)
}

// returned reports whether c has a value, without waiting.
func returned[T any](c chan T) bool {
	select {
	case v := <-c:
		c <- v
		return true
	default:
		return false
	}
}

// G1 and G11: while the Subscribe's Get is parked, a local Publish of its key
// does not wait for it, reserves the key and parks in PutMany. The Get then
// misses; the Subscribe, seeing its key touched, starts over on the general
// path, waits for the Publish's reservation, and gets the block.
func TestSubscribeOne_PublishDuringTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(1, 1)
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("one-pub", 1)[0]
		s := mustSub(t, n, 1)
		sub, pub := make(chan error, 1), make(chan error, 1)
		go func() { sub <- s.Subscribe(ctx, b.Cid()) }()
		synctest.Wait()
		go func() { pub <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
		synctest.Wait()
		require.Zero(t, ps.puts, "the Publish must reach its PutMany without waiting for the Get")
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.False(t, returned(sub), "the Subscribe must wait for the Publish that reserves its key")
		ps.putRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-pub)
		require.NoError(t, <-sub)
		require.Equal(t, ResponseMessage{Blocks: []blocks.Block{b}}, recv(t, s))
		require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
		require.Empty(t, cancels.take())
	})
}

// G7: Close waits for a Subscribe's Get in progress; the Subscribe then
// fails with ErrClosed and adds nothing.
func TestSubscribeOne_CloseWaitsForTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(1, 0)
		n := New(ps)
		s := mustSub(t, n, 1)
		sub, closed := make(chan error, 1), make(chan error, 1)
		go func() { sub <- s.Subscribe(ctx, mkBlocks("one-close", 1)[0].Cid()) }()
		synctest.Wait()
		go func() { closed <- n.Close() }()
		synctest.Wait()
		require.False(t, returned(closed), "Close must not return while a Get is in progress")
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-closed)
		require.ErrorIs(t, <-sub, ErrClosed)
		require.Equal(t, Stats{}, n.Stats())
	})
}

// G1, G5, G8: two Subscribes of the same key, parked in their Gets at once,
// both miss and both record their want; one Publish reaches both, and the
// key goes to the cancel function once. A Remove during a third one's Get
// leaves nothing behind.
func TestSubscribeOne_TwoAtOnceAndARemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(3, 0)
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("one-two", 2)
		s1, s2, s3 := mustSub(t, n, 1), mustSub(t, n, 2), mustSub(t, n, 3)
		d1, d2, d3 := make(chan error, 1), make(chan error, 1), make(chan error, 1)
		go func() { d1 <- s1.Subscribe(ctx, b[0].Cid()) }()
		go func() { d2 <- s2.Subscribe(ctx, b[0].Cid()) }()
		go func() { d3 <- s3.Subscribe(ctx, b[1].Cid()) }()
		synctest.Wait()
		s3.Remove()
		for range 3 {
			ps.getRel <- struct{}{}
		}
		synctest.Wait()
		require.NoError(t, <-d1)
		require.NoError(t, <-d2)
		require.ErrorIs(t, <-d3, ErrClosed)
		require.Equal(t, Stats{Subscriptions: 2, Keys: 1, Wants: 2}, n.Stats())
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
		require.Equal(t, b[:1], recv(t, s1).Blocks)
		require.Equal(t, b[:1], recv(t, s2).Blocks)
		require.Equal(t, []cid.Cid{b[0].Cid()}, cancels.take())
		require.Equal(t, Stats{Subscriptions: 2}, n.Stats())
	})
}

// G11, the mechanism: a Subscribe of one key whose Get finds the block
// commits under the subscription's lock alone (Subscription.commitHit). Here
// the key's shard lock is taken as the Get returns, as another operation
// would take it, and the Subscribe completes all the same.
func TestSubscribeOne_HitCommitsWithoutTheShardLock(t *testing.T) {
	b := mkBlocks("one-hit", 1)[0]
	hs := &hookStore{Blockstore: memStore()}
	require.NoError(t, hs.PutMany(ctx, []blocks.Block{b}))
	n := New(hs, WithShards(1))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	s := mustSub(t, n, 1)
	hs.afterGet = func(cid.Cid) { n.shards[0].mu.Lock() }
	unlock := sync.OnceFunc(n.shards[0].mu.Unlock)
	defer unlock()
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, b.Cid()) }()
	waited := false
	for err := error(nil); ; runtime.Gosched() {
		select {
		case err = <-done:
		default:
			if waited = waitmu.Waiting(&n.shards[0].mu) > 0; !waited {
				continue
			}
			unlock()
			err = <-done
		}
		require.NoError(t, err)
		break
	}
	require.False(t, waited, "the Subscribe waited for its key's shard lock after a Get that found the block")
	unlock()
	require.Equal(t, ResponseMessage{Blocks: []blocks.Block{b}}, recv(t, s))
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// G2: a Subscribe of one key whose Get finds the block, while a Subscribe of
// the same key by the same subscription, which missed, recorded its want
// during that Get, is a no-op: s wants the key already. Committing the hit
// without checking the key's version would hand s the block as well.
func TestSubscribeOne_HitAfterOwnWantDuringTheGet(t *testing.T) {
	b := mkBlocks("one-own", 1)[0]
	hs := &hookStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, hs, WithShards(1))
	s := mustSub(t, n, 1)
	gets := 0
	hs.onGet = func(cid.Cid) error {
		if gets++; gets == 1 {
			require.NoError(t, s.Subscribe(ctx, b.Cid())) // misses: b is not stored yet
			require.True(t, s.Wants(b.Cid()))
			require.NoError(t, hs.Blockstore.PutMany(ctx, []blocks.Block{b})) // stored behind the Notifier's back
		}
		return nil
	}
	require.NoError(t, s.Subscribe(ctx, b.Cid()))
	require.Equal(t, 2, gets, "the first Subscribe, starting over, finds b wanted and checks nothing")
	none(t, s)
	require.True(t, s.Wants(b.Cid()))
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
	require.Empty(t, cancels.take())
}

// G7: a Remove during the Get of a Subscribe that finds its block wins: the
// Subscribe fails with ErrClosed and hands over nothing.
func TestSubscribeOne_RemoveDuringAGetThatFinds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(1, 0)
		b := mkBlocks("one-hit-rm", 1)[0]
		require.NoError(t, ps.Blockstore.PutMany(ctx, []blocks.Block{b}))
		n := New(ps)
		t.Cleanup(func() { require.NoError(t, n.Close()) })
		s := mustSub(t, n, 1)
		sub := make(chan error, 1)
		go func() { sub <- s.Subscribe(ctx, b.Cid()) }()
		synctest.Wait()
		s.Remove()
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.ErrorIs(t, <-sub, ErrClosed)
		_, open := <-s.Messages()
		require.False(t, open, "the block was handed to a removed subscription")
		require.Equal(t, Stats{}, n.Stats())
	})
}

// G5 (WithCancelFunc): an interest subscription I wants k, whose block is
// stored, when a Subscribe of k by s parks in its Get. I's Remove ends that
// want, which bumps no version, and reports k to the cancel function under
// k's shard lock. Once the Remove has taken effect, a HAVE published to s
// orders s's Subscribe after the Remove: the Subscribe, its Get released,
// must not return before the cancel function does. So a hit of a key wanted
// at peek commits under the shard lock (see peek).
func TestSubscribeOne_HitWaitsForTheCancelOfAnInterestsClose(t *testing.T) {
	b := mkBlocks("one-hit-g5", 1)[0]
	k := b.Cid()
	hs := &hookStore{Blockstore: memStore()}
	require.NoError(t, hs.Blockstore.PutMany(ctx, []blocks.Block{b}))
	n, inCancel, releaseCancel := newCancelHeldOn(t, hs, k)
	in, err := n.NewInterest(10)
	require.NoError(t, err)
	require.NoError(t, in.Subscribe(ctx, k))
	s := mustSub(t, n, 1)
	k2 := keysInOtherShards(n, k, "one-hit-g5-other", 1)[0].Cid()
	require.NoError(t, s.Subscribe(ctx, k2)) // a miss: s wants k2

	inGet, releaseGet := holdGetOf(hs, k)
	sub := make(chan error, 1)
	go func() { sub <- s.Subscribe(ctx, k) }()
	<-inGet
	hs.onGet = nil
	removed := make(chan struct{})
	go func() { in.Remove(); close(removed) }()
	<-inCancel
	_, open := <-in.Messages()
	require.False(t, open, "the Remove has taken effect")
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{k2}}))
	close(releaseGet)
	returned, err := returnedOrLockWaited(n, k, sub)
	close(releaseCancel)
	require.False(t, returned, "the Subscribe of k returned (err %v) while the cancel function reporting k ran", err)
	require.NoError(t, <-sub)
	<-removed
	require.Equal(t, []cid.Cid{k2}, recv(t, s).Haves)
	require.Equal(t, []blocks.Block{b}, recv(t, s).Blocks, "the Subscribe comes after the HAVE")
}

// newCancelHeldOn returns a Notifier on bs, closed when the test ends, whose
// cancel function, in a call with k, closes inCancel and waits until
// releaseCancel is closed.
func newCancelHeldOn(t *testing.T, bs Blockstore, k cid.Cid) (n *Notifier, inCancel, releaseCancel chan struct{}) {
	t.Helper()
	inCancel, releaseCancel = make(chan struct{}), make(chan struct{})
	n = New(bs, WithCancelFunc(func(keys []cid.Cid) {
		if slices.Contains(keys, k) {
			close(inCancel)
			<-releaseCancel
		}
	}))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n, inCancel, releaseCancel
}

// holdGetOf makes a Get of k from hs close inGet and wait until releaseGet
// is closed.
func holdGetOf(hs *hookStore, k cid.Cid) (inGet, releaseGet chan struct{}) {
	inGet, releaseGet = make(chan struct{}), make(chan struct{})
	hs.onGet = func(c cid.Cid) error {
		if c == k {
			close(inGet)
			<-releaseGet
		}
		return nil
	}
	return inGet, releaseGet
}

// returnedOrLockWaited spins until the Subscribe whose result sub gets has
// returned (returned, with its error err), or some call waits for k's
// shard lock, which a Remove holds in its cancel function.
func returnedOrLockWaited(n *Notifier, k cid.Cid, sub chan error) (returned bool, err error) {
	for ; ; runtime.Gosched() {
		select {
		case err = <-sub:
			returned = true
		default:
			if waitmu.Waiting(shardLock(n, k)) == 0 { // the Remove holds it in its cancel function
				continue
			}
		}
		break
	}
	return returned, err
}

// NewSubscriptionFunc: a delivery function runs under the shard locks of its
// message's keys, a block found by a one-key Subscribe included. So that hit
// commits under the shard lock (see peek).
func TestSubscribeOne_HitRunsTheDeliveryFunctionUnderTheShardLock(t *testing.T) {
	b := mkBlocks("one-hit-fn", 1)[0]
	hs := &hookStore{Blockstore: memStore()}
	require.NoError(t, hs.Blockstore.PutMany(ctx, []blocks.Block{b}))
	n := New(hs)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	var got []blocks.Block
	held := false
	s, err := n.NewSubscriptionFunc(1, func(m ResponseMessage) {
		got = append(got, m.Blocks...)
		held = n.shardHeld(b.Cid())
	})
	require.NoError(t, err)
	require.NoError(t, s.Subscribe(ctx, b.Cid()))
	require.Equal(t, []blocks.Block{b}, got)
	require.True(t, held, "the delivery function ran without the shard lock of its message's key")
}

// G1: a one-key Subscribe of a key that a Publish has reserved for its
// PutMany waits for that Publish, and gets the block. peek must see the
// reservation (shard_read.go: "Check at peek only that nobody wants the key, not
// that nobody reserves it"); ignoring it, the Subscribe's Get missed, its
// want was recorded after the Publish had planned, and the stored block
// never came (g1-peek-ignores-reservation, which only
// TestLocalPublishRacingSubscribe_AlwaysDelivers caught, in some runs).
func TestSubscribeOne_WaitsForAPublishInItsPutMany(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(0, 1)
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("one-put", 1)[0]
		s := mustSub(t, n, 1)
		sub, pub := make(chan error, 1), make(chan error, 1)
		go func() { pub <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
		synctest.Wait()
		go func() { sub <- s.Subscribe(ctx, b.Cid()) }()
		synctest.Wait()
		require.False(t, returned(sub), "the Subscribe must wait for the Publish that reserves its key")
		ps.putRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-pub)
		require.NoError(t, <-sub)
		require.Equal(t, ResponseMessage{Blocks: []blocks.Block{b}}, recv(t, s))
		require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
		require.Empty(t, cancels.take())
	})
}
