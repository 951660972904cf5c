package notifier

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/stretchr/testify/require"
)

// Fetch: the GetBlock of a client, NewRequest and a Subscribe of one key in
// one call, which creates nothing when the blockstore has the block.

// maker is a newFunc for Fetch that hands out got.record and counts its
// calls.
type maker struct {
	got   msgLog
	calls atomic.Int32
}

func (m *maker) newFunc() func(ResponseMessage) {
	m.calls.Add(1)
	return m.got.record
}

// fetchResult is what a Fetch returned.
type fetchResult struct {
	blk blocks.Block
	s   *Subscription
	err error
}

// goFetch runs Fetch of k on a goroutine of its own and returns where its
// result arrives.
func goFetch(n *Notifier, k cid.Cid, newFunc func() func(ResponseMessage)) chan fetchResult {
	fetched := make(chan fetchResult, 1)
	go func() {
		blk, s, err := n.Fetch(ctx, k, newFunc)
		fetched <- fetchResult{blk, s, err}
	}()
	return fetched
}

// A stored block is returned and nothing is created: no subscription, no
// want, no delivery, no cancel, no registry entry.
func TestFetch_HitCreatesNothing(t *testing.T) {
	cs := &countStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, cs)
	b := mkBlocks("fetch-hit", 1)[0]
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
	m := &maker{}
	blk, s, err := n.Fetch(ctx, b.Cid(), m.newFunc)
	require.NoError(t, err)
	require.Nil(t, s)
	require.Equal(t, b, blk)
	require.Zero(t, m.calls.Load(), "no request, no delivery function")
	got := &m.got
	require.EqualValues(t, 1, cs.get.Load(), "one Get")
	require.Empty(t, got.take())
	require.Empty(t, cancels.take())
	require.Equal(t, Stats{}, n.Stats())
	require.Empty(t, n.requests)
}

// A missing block: Fetch returns a request that wants the key, as NewRequest
// and Subscribe would; its function gets the block when it is published,
// which ends the want and reports the key to the cancel function.
func TestFetch_MissReturnsARequestThatWantsTheKey(t *testing.T) {
	for _, bs := range []Blockstore{memStore(), nil} {
		n, cancels := newWithCancels(t, bs)
		b := mkBlocks("fetch-miss", 1)[0]
		m := &maker{}
		got := &m.got
		blk, s, err := n.Fetch(ctx, b.Cid(), m.newFunc)
		require.NoError(t, err)
		require.Nil(t, blk)
		require.NotNil(t, s)
		require.EqualValues(t, 1, m.calls.Load())
		require.Zero(t, s.ID())
		require.True(t, s.Wants(b.Cid()))
		require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}}))
		require.Equal(t, []ResponseMessage{{From: "p", Blocks: []blocks.Block{b}}}, got.take())
		require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
		s.Remove()
		require.Equal(t, Stats{}, n.Stats())
	}
}

// A key that another request wants, with a block stored behind the
// Notifier's back: Fetch takes the general path, whose Subscribe finds the
// block and hands it to the new request's function and, as Subscribe does,
// to the other request waiting for it. Fetch returns the request, which then
// wants nothing.
func TestFetch_KeyWantedByAnotherTakesTheGeneralPath(t *testing.T) {
	bs := memStore()
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("fetch-shared", 1)[0]
	otherGot := &msgLog{}
	other := mustRequest(t, n, otherGot.record)
	require.NoError(t, other.Subscribe(ctx, b.Cid()))
	require.NoError(t, bs.PutMany(ctx, []blocks.Block{b})) // behind its back
	m := &maker{}
	got := &m.got
	blk, s, err := n.Fetch(ctx, b.Cid(), m.newFunc)
	require.NoError(t, err)
	require.Nil(t, blk)
	require.NotNil(t, s)
	require.EqualValues(t, 1, m.calls.Load())
	want := []ResponseMessage{{Blocks: []blocks.Block{b}}}
	require.Equal(t, want, got.take())
	require.Equal(t, want, otherGot.take())
	require.False(t, s.Wants(b.Cid()))
	require.Equal(t, []cid.Cid{b.Cid()}, cancels.take(), "the other's want ended")
	s.Remove()
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// Errors create and change nothing: an undefined key, a cancelled context,
// a failed blockstore check, a closed Notifier.
func TestFetch_ErrorsChangeNothing(t *testing.T) {
	errGet := errors.New("get failed")
	hs := &hookStore{Blockstore: memStore(), onGet: func(cid.Cid) error { return errGet }}
	n, cancels := newWithCancels(t, hs)
	k := mkBlocks("fetch-err", 1)[0].Cid()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		k    cid.Cid
		want error
	}{
		{ctx, cid.Undef, ErrInvalidCid},
		{cancelled, k, context.Canceled},
		{ctx, k, errGet},
	} {
		blk, s, err := n.Fetch(tc.ctx, tc.k, nil)
		require.ErrorIs(t, err, tc.want)
		require.Nil(t, blk)
		require.Nil(t, s)
		require.Equal(t, Stats{}, n.Stats())
		require.Empty(t, n.requests)
	}
	other := mustRequest(t, n, nil) // the general path fails too, and leaves only other
	hs.onGet = nil
	require.NoError(t, other.Subscribe(ctx, k))
	hs.onGet = func(cid.Cid) error { return errGet }
	blk, s, err := n.Fetch(ctx, k, nil)
	require.ErrorIs(t, err, errGet)
	require.Nil(t, blk)
	require.Nil(t, s)
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
	require.Equal(t, []*Subscription{other}, slices.Collect(maps.Keys(n.requests)))
	require.Empty(t, cancels.take())
	require.NoError(t, n.Close())
	_, _, err = n.Fetch(ctx, k, nil)
	require.ErrorIs(t, err, ErrClosed)
	_, _, err = n.Fetch(ctx, cid.Undef, nil)
	require.ErrorIs(t, err, ErrInvalidCid, "bad input first, closed or not")
}

// G1 and G11: a local Publish of the key while Fetch's Get is parked does
// not wait for it; the Get misses, the key's version has moved, and Fetch
// starts over on the general path, waits for the Publish's reservation and
// hands the block to the request's function. Without the version check the
// want would be recorded after the Publish found nobody to deliver to.
func TestFetch_PublishDuringTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(1, 1)
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("fetch-pub", 1)[0]
		m := &maker{}
		got := &m.got
		fetched, pub := goFetch(n, b.Cid(), m.newFunc), make(chan error, 1)
		synctest.Wait()
		go func() { pub <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
		synctest.Wait()
		require.Zero(t, ps.puts, "the Publish reaches its PutMany without waiting for the Get")
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.False(t, returned(fetched), "Fetch waits for the Publish that reserves its key")
		ps.putRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-pub)
		r := <-fetched
		require.NoError(t, r.err)
		require.Nil(t, r.blk, "the Get missed")
		require.NotNil(t, r.s)
		require.EqualValues(t, 1, m.calls.Load(), "the request made for the miss is the one subscribed again")
		require.Equal(t, []ResponseMessage{{Blocks: []blocks.Block{b}}}, got.take(), "the general path delivered it")
		require.False(t, r.s.Wants(b.Cid()))
		r.s.Remove()
		require.Equal(t, Stats{}, n.Stats())
		require.Empty(t, cancels.take())
	})
}

// G7: Close waits for Fetch's Get; a miss then records nothing and Fetch
// returns ErrClosed.
func TestFetch_CloseDuringTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(1, 0)
		n, cancels := newWithCancels(t, ps)
		fetched, closed := make(chan error, 1), make(chan error, 1)
		go func() {
			_, s, err := n.Fetch(ctx, mkBlocks("fetch-close", 1)[0].Cid(), nil)
			if s != nil {
				err = errors.New("a request was returned")
			}
			fetched <- err
		}()
		synctest.Wait()
		go func() { closed <- n.Close() }()
		synctest.Wait()
		require.False(t, returned(closed), "Close waits for the Get")
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-closed)
		require.ErrorIs(t, <-fetched, ErrClosed)
		require.Empty(t, cancels.take())
		requireIndexEmpty(t, n)
		require.Empty(t, n.requests)
	})
}

// Fetches of stored and missing keys from many goroutines, with Publishes,
// garbage collection behind the Notifier's back and Removes, while Close
// runs: a returned block is the key's; a returned request gets nothing after
// its Remove has returned; once Close has returned every request is ended
// and nothing is left, in the index or the registry.
func TestFetch_ConcurrentWithClose(t *testing.T) {
	for round := range 20 {
		bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore())) // with DeleteBlock
		b := mkBlocks("fetch-race", 8)
		require.NoError(t, bs.PutMany(ctx, b[:4]))
		n := New(bs, WithShards(2), WithCancelFunc(func([]cid.Cid) {}))
		started := make(chan struct{}, 4)
		var wg sync.WaitGroup
		var bad atomic.Value
		reqs := make([][]*Subscription, 4)
		for g := range reqs {
			wg.Go(func() { fetchUntilClosed(t, n, bs, b, g, &reqs[g], started, &bad) })
		}
		for range reqs {
			done(t, started, "goroutine started")
		}
		require.NoError(t, n.Close())
		wg.Wait()
		if v := bad.Load(); v != nil {
			t.Fatalf("round %d: %v", round, v)
		}
		for _, rs := range reqs {
			for _, s := range rs {
				closedNow(t, s)
			}
		}
		requireIndexEmpty(t, n)
		require.Empty(t, n.requests)
	}
}

// fetchUntilClosed is the g-th goroutine of TestFetch_ConcurrentWithClose:
// it fetches the keys of b in turn, from the g-th on, until Fetch says
// ErrClosed, keeps the requests it gets in reqs and stores in bad what must
// not happen; between Fetches it stirs (stirAfterFetch). It signals started
// after its first Fetch, or as it returns.
func fetchUntilClosed(t *testing.T, n *Notifier, bs blockstore.Blockstore, b []blocks.Block, g int, reqs *[]*Subscription, started chan<- struct{}, bad *atomic.Value) {
	t.Helper()
	signal := sync.OnceFunc(func() { started <- struct{}{} })
	defer signal()
	for i := 0; ; i++ {
		k := b[(g+i)%len(b)]
		var removed atomic.Bool
		blk, s, err := n.Fetch(ctx, k.Cid(), func() func(ResponseMessage) {
			return func(m ResponseMessage) {
				if removed.Load() {
					bad.Store("a delivery after Remove returned")
				}
			}
		})
		switch {
		case errors.Is(err, ErrClosed):
			return
		case err != nil:
			bad.Store(err.Error())
			return
		case blk != nil && blk.Cid() != k.Cid():
			bad.Store("the wrong block")
		case s != nil:
			*reqs = append(*reqs, s)
		}
		signal()
		stirAfterFetch(t, i, n, bs, k, s, &removed)
	}
}

// stirAfterFetch does what the i-th Fetch of k is followed by, in turn: a
// Publish of k, its garbage collection behind the Notifier's back, the
// Remove of the request s the Fetch returned (if any; removed is set once
// Remove has returned), or nothing.
func stirAfterFetch(t *testing.T, i int, n *Notifier, bs blockstore.Blockstore, k blocks.Block, s *Subscription, removed *atomic.Bool) {
	t.Helper()
	switch i % 4 {
	case 0:
		_ = n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{k}})
	case 1:
		_ = bs.DeleteBlock(ctx, k.Cid()) // garbage collection
	case 2:
		if s != nil {
			s.Remove()
			removed.Store(true)
		}
	}
}

// writtenParkStore parks its first PutMany after it has written: the blocks
// are in the store, the Publish has not committed. Gets are parked as
// parkStore parks them.
type writtenParkStore struct {
	*parkStore
}

func (w writtenParkStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	err := w.Blockstore.PutMany(ctx, blks)
	w.park(&w.puts, w.putRel)
	return err
}

// G5 and G10: Fetch F parks in its Get of k, which nobody wants; S then
// subscribes k (a miss, its WANT sent) and a local Publish of k writes the
// block and parks before it commits. F's Get finds that block, so F comes
// after the Publish: it must not return while S still wants k, nor before
// the cancel function reporting k has run. It takes the general path, waits
// for the Publish, and its request gets the block. Without the hit's second
// version read, F returns the block at once.
func TestFetch_HitOfABlockAPublishHasNotCommitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := writtenParkStore{newParkStore(1, 1)}
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("fetch-uncommitted", 1)[0]
		m := &maker{}
		fetched, pub := goFetch(n, b.Cid(), m.newFunc), make(chan error, 1)
		synctest.Wait() // F parked in its Get
		sGot := &msgLog{}
		s := mustRequest(t, n, sGot.record)
		require.NoError(t, s.Subscribe(ctx, b.Cid()))
		go func() { pub <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
		synctest.Wait() // the Publish has written k and parked
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.False(t, returned(fetched), "Fetch returned k's block while S still wanted k")
		require.True(t, s.Wants(b.Cid()))
		ps.putRel <- struct{}{}
		synctest.Wait()
		require.NoError(t, <-pub)
		want := []ResponseMessage{{Blocks: []blocks.Block{b}}}
		require.Equal(t, want, sGot.take())
		require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
		r := <-fetched
		require.NoError(t, r.err)
		require.Nil(t, r.blk)
		require.NotNil(t, r.s)
		require.Equal(t, want, m.got.take(), "the general path found the block")
		r.s.Remove()
		s.Remove()
		require.Equal(t, Stats{}, n.Stats())
	})
}

// failPutParkStore parks its first PutMany, as parkStore does, and then
// fails it without writing; later ones write.
type failPutParkStore struct {
	*parkStore
}

var errPutFailed = errors.New("put failed")

func (f failPutParkStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	f.mu.Lock()
	first := f.puts > 0
	f.mu.Unlock()
	if !first {
		return f.Blockstore.PutMany(ctx, blks)
	}
	f.park(&f.puts, f.putRel)
	return errPutFailed
}

// G2 and G11: a local Publish of k whose PutMany fails, while Fetch's Get of
// k is parked. The Publish does not wait for the Get; the Get misses, k's
// version has moved, and Fetch takes the general path, which waits for the
// Publish's reservation. The failed store delivers nothing and stores
// nothing, so Fetch's request is left wanting k, and a later Publish of k
// reaches it. Without the version check Fetch would record its want while
// the Publish still held k reserved, and (had the put succeeded) miss the
// block; here it shows as Fetch returning before the Publish.
func TestFetch_FailedPublishDuringTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := failPutParkStore{newParkStore(1, 1)}
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("fetch-failed-pub", 1)[0]
		m := &maker{}
		fetched, pub := goFetch(n, b.Cid(), m.newFunc), make(chan error, 1)
		synctest.Wait() // Fetch parked in its Get
		go func() { pub <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
		synctest.Wait()
		require.Zero(t, ps.puts, "the Publish reaches its PutMany without waiting for the Get")
		ps.getRel <- struct{}{}
		synctest.Wait()
		require.False(t, returned(fetched), "Fetch waits for the Publish that reserves its key")
		ps.putRel <- struct{}{}
		synctest.Wait()
		require.ErrorIs(t, <-pub, errPutFailed)
		r := <-fetched
		require.NoError(t, r.err)
		require.Nil(t, r.blk)
		require.NotNil(t, r.s)
		require.EqualValues(t, 1, m.calls.Load(), "one request, made for the miss and subscribed again")
		require.Empty(t, m.got.take(), "a failed store delivers nothing")
		require.True(t, r.s.Wants(b.Cid()), "nothing a user asked for is lost: the request still wants k")
		require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())

		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}))
		require.Equal(t, []ResponseMessage{{From: "peer", Blocks: []blocks.Block{b}}}, m.got.take())
		require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
		r.s.Remove()
		require.Equal(t, Stats{}, n.Stats())
	})
}

// G11 and G3: a remote Publish of k, which nobody wants, while Fetch's Get of
// k is parked on the path without reservations: the Publish neither waits
// for the Get nor stores the block (nobody wants it yet), and Fetch, its Get
// having missed, returns a request that wants k. The Publish is ordered
// before the Fetch; a second Publish of k, after, reaches the request.
func TestFetch_UnwantedRemotePublishDuringTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ps := newParkStore(1, 0)
		n, cancels := newWithCancels(t, ps, WithShards(1))
		b := mkBlocks("fetch-remote-pub", 1)[0]
		m := &maker{}
		fetched := goFetch(n, b.Cid(), m.newFunc)
		synctest.Wait() // Fetch parked in its Get
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}),
			"the Publish returns while the Get is parked")
		has, err := ps.Has(ctx, b.Cid())
		require.NoError(t, err)
		require.False(t, has, "a remote block nobody wants is not stored")
		ps.getRel <- struct{}{}
		synctest.Wait()
		r := <-fetched
		require.NoError(t, r.err)
		require.Nil(t, r.blk)
		require.NotNil(t, r.s)
		require.Empty(t, m.got.take())
		require.True(t, r.s.Wants(b.Cid()))
		require.Empty(t, cancels.take())

		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}))
		require.Equal(t, []ResponseMessage{{From: "peer", Blocks: []blocks.Block{b}}}, m.got.take())
		require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
		r.s.Remove()
		require.Equal(t, Stats{}, n.Stats())
	})
}

// ctxParkStore's Get waits for its context and returns its error, as a
// blockstore on a slow disk or network does when the caller gives up.
type ctxParkStore struct {
	Blockstore
}

func (c ctxParkStore) Get(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A Fetch whose context ends during its Get returns the Get's error and
// leaves nothing behind: newFunc is never called, no request, no want, no
// cancel; and other operations on the key went on meanwhile.
func TestFetch_ContextEndsDuringTheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, cancels := newWithCancels(t, ctxParkStore{memStore()}, WithShards(1))
		b := mkBlocks("fetch-ctx", 2)
		m := &maker{}
		fctx, cancel := context.WithCancel(ctx)
		fetched := make(chan fetchResult, 1)
		go func() {
			blk, s, err := n.Fetch(fctx, b[0].Cid(), m.newFunc)
			fetched <- fetchResult{blk, s, err}
		}()
		synctest.Wait() // Fetch waits in its Get
		other := mustRequest(t, n, func(ResponseMessage) {})
		require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[1:]}), "a Publish in the same shard does not wait for the Get")
		require.False(t, returned(fetched))
		cancel()
		synctest.Wait()
		r := <-fetched
		require.ErrorIs(t, r.err, context.Canceled)
		require.Nil(t, r.blk)
		require.Nil(t, r.s)
		require.Zero(t, m.calls.Load(), "no request is made for a failed Get")
		other.Remove()
		require.Equal(t, Stats{}, n.Stats())
		require.Empty(t, cancels.take())
		requireIndexEmpty(t, n)
	})
}

// A stored block can still reach Fetch's caller through a request, as the
// doc says: a Publish of a HAVE for another key of k's version bucket (nobody
// wants either key) during the Get moves the version, and Fetch takes the
// general path. It calls newFunc once, the request's function gets the block
// before Fetch returns, and the request wants nothing more. (Found by review:
// the doc said a stored block never makes a request.)
func TestFetch_StoredBlockAfterAFalseAlarmReachesTheRequest(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n := New(hs, WithShards(1))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b := mkBlocks("fetch-false-alarm", 1)[0]
	other := sameBucket(t, b.Cid(), "fetch-false-alarm-other").Cid()
	require.NoError(t, hs.Blockstore.PutMany(ctx, []blocks.Block{b}))
	var once sync.Once
	hs.onGet = func(cid.Cid) error {
		once.Do(func() { require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{other}})) })
		return nil
	}
	m := &maker{}
	blk, s, err := n.Fetch(ctx, b.Cid(), m.newFunc)
	require.NoError(t, err)
	require.Nil(t, blk, "the version moved during the Get: the general path hands the block to the request")
	require.NotNil(t, s)
	require.EqualValues(t, 1, m.calls.Load())
	require.Equal(t, []ResponseMessage{{Blocks: []blocks.Block{b}}}, m.got.take(), "the request got the block before Fetch returned")
	require.False(t, s.Wants(b.Cid()))
	s.Remove()
	require.Equal(t, Stats{}, n.Stats())
}

// stallCtx is a context whose first Err call closes entered and blocks until
// release is closed: it holds an operation at its check of the context, after
// its check of Close and before its first critical section.
type stallCtx struct {
	context.Context
	once             sync.Once
	entered, release chan struct{}
}

func (c *stallCtx) Err() error {
	c.once.Do(func() { close(c.entered); <-c.release })
	return c.Context.Err()
}

// G7: a Fetch that has passed its check of Close, but not reached its first
// critical section, when Close runs is refused at that critical section
// (peek): it returns ErrClosed and calls no blockstore method after Close has
// returned (g7-peek-ignores-close: Close's barrier and its wait for the
// operations in the blockstore cover only those that saw the Notifier open
// under a shard lock, so one that counts itself in later is not waited for).
func TestFetch_CheckOfCloseBeforePeekDoesNotLetItThrough(t *testing.T) {
	cs := &countStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, cs)
	b := mkBlocks("fetch-late", 1)[0]
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
	sc := &stallCtx{Context: ctx, entered: make(chan struct{}), release: make(chan struct{})}
	fetched := make(chan fetchResult, 1)
	go func() {
		blk, s, err := n.Fetch(sc, b.Cid(), nil)
		fetched <- fetchResult{blk, s, err}
	}()
	done(t, sc.entered, "Fetch at its check of the context")
	require.NoError(t, n.Close())
	gets := cs.get.Load()
	close(sc.release)
	r := <-fetched
	require.ErrorIs(t, r.err, ErrClosed)
	require.Nil(t, r.blk)
	require.Nil(t, r.s)
	require.Equal(t, gets, cs.get.Load(), "a Get after Close had returned")
	require.Empty(t, cancels.take())
	requireIndexEmpty(t, n)
	require.Empty(t, n.requests)
}
