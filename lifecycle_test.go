package notifier

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// G7: after Close every entry point returns ErrClosed and every subscription
// is ended with ErrClosed.
func TestClose_EndsEverythingAndIsIdempotent(t *testing.T) {
	bs := memStore()
	n := New(bs, WithBufferSize(1))
	b := mkBlocks("close", 2)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	for i := range 3 { // leave a backlog, and so a drain goroutine, behind
		seqHave(t, n, b[0].Cid(), i)
	}
	require.NoError(t, n.Close())
	require.NoError(t, n.Close())

	waitClosed(t, s)
	require.ErrorIs(t, s.Err(), ErrClosed)
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: b}), ErrClosed)
	require.ErrorIs(t, s.Subscribe(ctx, b[0].Cid()), ErrClosed)
	_, err := n.NewSubscription(2)
	require.ErrorIs(t, err, ErrClosed)
	s.Unsubscribe(b[0].Cid())
	s.Remove()
	require.Equal(t, Stats{}, n.Stats())
	has, err := bs.Has(ctx, b[1].Cid())
	require.NoError(t, err)
	require.False(t, has, "Publish after Close stored a block")
}

// G7: after Close no goroutine of the library is left, even where a
// subscription's backlog was being drained into a channel nobody reads.
func TestClose_LeavesNoGoroutine(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	n := New(memStore(), WithBufferSize(0))
	k := mkBlocks("leak", 1)[0].Cid()
	for i := range 50 {
		s := mustSub(t, n, uint64(i))
		require.NoError(t, s.Subscribe(ctx, k))
	}
	seqHave(t, n, k, 0) // every subscription now has a drainer blocked on its channel
	require.NoError(t, n.Close())
	require.NoError(t, goleak.Find(append(leakOpts, baseline)...))
}

// G7/G10: Close racing every other operation: nothing panics, every call
// returns nil or ErrClosed, and afterwards nothing is left.
func TestClose_RacingEverything(t *testing.T) {
	for round := range 20 {
		baseline := goleak.IgnoreCurrent()
		n := New(memStore(), WithBufferSize(1))
		b := mkBlocks(fmt.Sprint("close-race-", round), 8)
		var wg, warm sync.WaitGroup
		warm.Add(4)
		for g := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					if i == 20 {
						warm.Done()
					}
					s, err := n.NewSubscription(uint64(g)<<32 | uint64(i))
					if errors.Is(err, ErrClosed) {
						return
					}
					if !assert.NoError(t, err) {
						return
					}
					if err := s.Subscribe(ctx, keysOf(b[i%8:])...); err != nil {
						assert.ErrorIs(t, err, ErrClosed)
					}
					err = n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[(i+g)%8:][:1], Haves: keysOf(b)})
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
					}
					if i%2 == 0 {
						s.Remove()
					}
				}
			})
		}
		warm.Wait() // Close while every worker is in full swing
		require.NoError(t, n.Close())
		wg.Wait()
		require.Equal(t, Stats{}, n.Stats())
		require.NoError(t, goleak.Find(append(leakOpts, baseline)...))
	}
}

// G8: once every subscription is removed, the index holds nothing, however
// the wants ended.
func TestIndex_EmptyAfterAllRemoved(t *testing.T) {
	n, _ := newWithCancels(t, memStore(), WithShards(16))
	b := mkBlocks("g8", 200)
	var subs []*Subscription
	for i := range 50 {
		s := mustSub(t, n, uint64(i))
		require.NoError(t, s.Subscribe(ctx, keysOf(b[i:i+100])...))
		subs = append(subs, s)
	}
	require.Equal(t, Stats{Subscriptions: 50, Keys: 149, Wants: 5000}, n.Stats())
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:40], Haves: keysOf(b)}))
	for i, s := range subs {
		if i%2 == 0 {
			s.Unsubscribe(keysOf(b[60:120])...)
		}
	}
	for _, s := range subs {
		s.Remove()
	}
	requireIndexEmpty(t, n)
	require.Empty(t, n.sessions)
}

// G9: bad input gets a clear error and changes nothing.
func TestBadInput_RefusedWhole(t *testing.T) {
	bs := memStore()
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("bad", 2)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	before := n.Stats()

	err := s.Subscribe(ctx, b[1].Cid(), cid.Undef)
	require.ErrorIs(t, err, ErrInvalidCid)
	require.ErrorContains(t, err, "keys[1]")
	for _, msg := range []ResponseMessage{
		{Blocks: []blocks.Block{b[0], nil}},
		{From: "p", Blocks: b, Haves: []cid.Cid{b[0].Cid(), cid.Undef}},
		{From: "p", Blocks: b, DontHaves: []cid.Cid{cid.Undef}},
	} {
		err := n.Publish(ctx, msg)
		require.Error(t, err)
		require.True(t, errors.Is(err, ErrNilBlock) || errors.Is(err, ErrInvalidCid), "%v", err)
	}
	require.Equal(t, before, n.Stats())
	none(t, s)
	require.Empty(t, cancels.take())
	for _, blk := range b {
		has, err := bs.Has(ctx, blk.Cid())
		require.NoError(t, err)
		require.False(t, has, "a refused message stored a block")
	}

	_, err = n.NewSubscription(1)
	require.ErrorIs(t, err, ErrDuplicateSession)
	require.ErrorContains(t, err, "session 1")
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
	require.Equal(t, b[:1], recv(t, s).Blocks, "the first subscription is unaffected")
}

func TestEmptyInputIsFine(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx))
	require.NoError(t, n.Publish(ctx, ResponseMessage{}))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{}}))
	s.Unsubscribe()
	none(t, s)
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

func TestOptions_PanicOnInvalidValues(t *testing.T) {
	for name, f := range map[string]func(){
		"WithShards(0)":      func() { WithShards(0) },
		"WithShards(3)":      func() { WithShards(3) },
		"WithShards(131072)": func() { WithShards(1 << 17) },
		"WithBufferSize(-1)": func() { WithBufferSize(-1) },
		"WithMaxPending(-1)": func() { WithMaxPending(-1) },
	} {
		func() {
			defer func() {
				r := recover()
				require.NotNil(t, r, "%s did not panic", name)
				require.Contains(t, fmt.Sprint(r), "notifier: "+name)
			}()
			f()
		}()
	}
}

// G10: random operations from many goroutines are race-free, and leave
// nothing behind.
func TestStress_RandomOperations(t *testing.T) {
	n, _ := newWithCancels(t, memStore(), WithShards(8), WithBufferSize(4))
	b := mkBlocks("stress", 64)
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() { stressWorker(t, n, b, uint64(g), deadline) })
	}
	wg.Wait()
	require.Equal(t, Stats{}, n.Stats())
}

// stressWorker runs random operations until deadline, reading its
// subscription's messages as it goes, and removes its subscription.
func stressWorker(t *testing.T, n *Notifier, b []blocks.Block, id uint64, deadline time.Time) {
	rng := rand.New(rand.NewPCG(id, 1))
	pick := func(k int) []blocks.Block { i := rng.IntN(len(b) - k); return b[i : i+k] }
	s := mustSub(t, n, id)
	for i := 0; time.Now().Before(deadline) || i < 100; i++ {
		switch rng.IntN(6) {
		case 0, 1:
			require.NoError(t, s.Subscribe(ctx, keysOf(pick(4))...))
		case 2:
			s.Unsubscribe(keysOf(pick(4))...)
		case 3:
			from := ""
			if rng.IntN(2) == 0 {
				from = "peer"
			}
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: from, Blocks: pick(2), Haves: keysOf(pick(3)), DontHaves: keysOf(pick(1))}))
		case 4:
			s.Remove()
			s = mustSub(t, n, id)
		case 5:
			_ = n.Stats()
		}
		for drained := false; !drained; {
			select {
			case <-s.Messages():
			default:
				drained = true
			}
		}
	}
	s.Remove()
}

// The same for a subscription ended as a slow consumer by a Publish. synctest
// orders the drain goroutine's hand-off.
func TestSlowConsumerEnd_AtomicWithItsWants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hs := &hookStore{Blockstore: memStore()}
		n, cancels := newWithCancels(t, hs, WithShards(4), WithBufferSize(0), WithMaxPending(1))
		kA := blockInShard(n, "a", 0, true)
		bB := blockInShard(n, "b", 0, false)
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA.Cid(), bB.Cid()))
		wants := n.Stats().Wants
		unblock := blockShard(t, n, hs, 0)

		have := ResponseMessage{From: "p", Haves: []cid.Cid{bB.Cid()}}
		require.NoError(t, n.Publish(ctx, have))
		synctest.Wait()                          // the drain goroutine holds it, blocked on the channel
		require.NoError(t, n.Publish(ctx, have)) // queued: the bound
		published := make(chan struct{})
		go func() { defer close(published); assert.NoError(t, n.Publish(ctx, have)) }()
		waitWaiters(t, &n.shards[0].mu, 1)
		require.NoError(t, s.Err(), "ended while its wants are still in the index")
		require.Equal(t, wants, n.Stats().Wants, "its wants left the index")

		unblock()
		done(t, published, "Publish")
		require.ErrorIs(t, s.Err(), ErrSlowConsumer)
		waitClosed(t, s)
		require.Equal(t, sorted(kA.Cid(), bB.Cid()), cancels.take())
		again := mustSub(t, n, 1)
		again.Remove()
	})
}

// Subscribe's doc: on an ended subscription it returns why it ended
// (ErrClosed after Remove, ErrSlowConsumer after a slow-consumer end),
// whatever ctx's state. It checked ctx first, so with a done ctx it returned
// ctx's error instead (found by review), while Close won over ctx.
func TestSubscribe_EndedSubscriptionSaysWhyWhateverCtx(t *testing.T) {
	k := mkBlocks("ended, ctx done", 1)[0].Cid()
	done, cancel := context.WithCancel(ctx)
	cancel()

	n := New(nil)
	removed := mustSub(t, n, 1)
	removed.Remove()
	err := removed.Subscribe(done, k)
	require.ErrorIs(t, err, ErrClosed)
	require.NotErrorIs(t, err, context.Canceled)

	slow := New(nil, WithBufferSize(0), WithMaxPending(1))
	s := mustSub(t, slow, 1)
	require.NoError(t, s.Subscribe(ctx, k))
	for range 4 {
		require.NoError(t, slow.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{k}}))
	}
	for range s.Messages() {
	}
	require.ErrorIs(t, s.Err(), ErrSlowConsumer, "setup")
	err = s.Subscribe(done, k)
	require.ErrorIs(t, err, ErrSlowConsumer)
	require.NotErrorIs(t, err, context.Canceled)

	live := mustSub(t, n, 2)
	require.ErrorIs(t, live.Subscribe(done, k), context.Canceled, "a live subscription still gets ctx's error")
	require.NoError(t, n.Close())
	require.ErrorIs(t, live.Subscribe(done, k), ErrClosed, "Close wins over ctx")
	require.NoError(t, slow.Close())
}

// Fetch's error for a done ctx names Fetch.
func TestFetch_DoneCtxErrorNamesFetch(t *testing.T) {
	n := New(memStore())
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err := n.Fetch(done, mkBlocks("fetch ctx", 1)[0].Cid(), nil)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "notifier: fetch:")
	require.NoError(t, n.Close())
}

// A Close that comes between an overflow and its end, the end left pending
// behind a stalled PutMany: once Close has returned, Err says
// ErrSlowConsumer (the end completed first) and Subscribe says ErrClosed, as
// after every Close (G7). Subscribe's doc had promised ErrSlowConsumer for
// this case too. Found by review.
func TestSubscribe_AfterCloseBetweenOverflowAndEndSaysClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, _ := newWithCancels(t, st, WithBufferSize(1), WithMaxPending(1))
		b := mkBlocks("close between overflow and end", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		s, release, published := atBoundBehindA(t, n, st, b)
		// A HAVE of kB overflows s; its end waits for kA.
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kB}}))
		require.NoError(t, s.Err(), "setup: the end is not pending")
		closed := goAsleep(t, "Close", n.Close)
		release()
		require.NoError(t, <-published)
		require.NoError(t, <-closed)
		require.ErrorIs(t, s.Err(), ErrSlowConsumer)
		require.ErrorIs(t, s.Subscribe(ctx, kA), ErrClosed)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, s.Subscribe(cancelled, kA), ErrClosed)
	})
}

// G9: a nil block is refused wherever it stands in the message, first
// included (g9-nil-block-late: TestBadInput_RefusedWhole puts it second only).
func TestBadInput_NilBlockFirstIsRefused(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("nil-first", 1)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	for _, blks := range [][]blocks.Block{{nil}, {nil, b[0]}} {
		require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: blks}), ErrNilBlock)
	}
	none(t, s)
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
}

// G9: a message with an undefined CID is refused whole wherever it stands,
// past the first entry of DontHaves included, and a block whose CID is
// undefined too (g9-undefined-block-cid, g9-donthaves-checked-first-only:
// TestBadInput_RefusedWhole puts an undefined key first in DontHaves and none
// in a block): the error is ErrInvalidCid, the good keys of the message are
// neither stored nor delivered, and no want changes.
func TestBadInput_UndefinedCidAnywhereIsRefused(t *testing.T) {
	bs := memStore()
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("undef-anywhere", 1)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	undef, err := blocks.NewBlockWithCid([]byte("no cid"), cid.Undef)
	require.NoError(t, err)
	for _, msg := range []ResponseMessage{
		{Blocks: []blocks.Block{b[0], undef}},
		{From: "p", DontHaves: []cid.Cid{b[0].Cid(), cid.Undef}},
	} {
		require.ErrorIs(t, n.Publish(ctx, msg), ErrInvalidCid)
	}
	none(t, s)
	require.Empty(t, cancels.take())
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
	has, err := bs.Has(ctx, b[0].Cid())
	require.NoError(t, err)
	require.False(t, has, "a refused message stored a block")
}
