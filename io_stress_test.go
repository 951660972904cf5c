package notifier

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/stacks"
	"github.com/bitswapsync/notifier/internal/waitmu"
)

// Stress tests of waiters and marks against a store that yields inside its
// calls, and the wake-ups of a release racing a new waiter.

func (s *stallStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	s.wait(c)
	return s.Blockstore.Get(ctx, c)
}

func (s *stallStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, b := range blks {
		s.wait(b.Cid())
	}
	return s.Blockstore.PutMany(ctx, blks)
}

func (p *panicStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if c == p.key {
		panic("blockstore: Get " + c.String())
	}
	return p.Blockstore.Get(ctx, c)
}

func (p *panicStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, b := range blks {
		if b.Cid() == p.key {
			panic("blockstore: PutMany " + b.Cid().String())
		}
	}
	return p.Blockstore.PutMany(ctx, blks)
}

// wakeOnRelease is called by waiters holding different shard locks while
// wakeStaleMarks, holding another, swaps the channel out (wakeWaiters): it
// must return a channel, never read a nil one. A stress test of the two
// primitives, bounded in time; found by review, where the second read after
// a lost CompareAndSwap found nil.
func TestWakeOnRelease_RacesWakeWaiters(t *testing.T) {
	// More Ps than this machine's two CPUs: the window between a lost
	// CompareAndSwap and the next read is a few instructions, which the
	// swapper hits when the OS preempts a waiter there.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(8, runtime.NumCPU())))
	const waiters, budget = 6, 2 * time.Second
	o := &op{}
	var wg sync.WaitGroup
	done := make(chan struct{})
	panics := make(chan any, waiters)
	for range waiters {
		wg.Go(func() { callWakeOnRelease(o, done, panics) })
	}
	wg.Go(func() { swapWakeChannel(o, done) })
	select {
	case r := <-panics:
		t.Errorf("wakeOnRelease racing wakeWaiters: %v", r)
	case <-time.After(budget):
	}
	close(done)
	wg.Wait()
}

// callWakeOnRelease is a waiter of TestWakeOnRelease_RacesWakeWaiters: it
// calls o.wakeOnRelease, 1024 times between looks at done, until done is
// closed, and panics if it returns nil; the panic is sent on panics.
func callWakeOnRelease(o *op, done chan struct{}, panics chan any) {
	defer func() {
		if r := recover(); r != nil {
			panics <- r
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		for range 1024 {
			if o.wakeOnRelease() == nil {
				panic("wakeOnRelease returned a nil channel")
			}
		}
	}
}

// swapWakeChannel is the swapper of TestWakeOnRelease_RacesWakeWaiters: it
// calls o.wakeWaiters, swapping the channel out, until done is closed.
func swapWakeChannel(o *op, done chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
			o.wakeWaiters()
		}
	}
}

// spinWaiting is waitWaiting inside a synctest bubble, whose clock stands
// still while the caller spins: it gives up after a bounded number of
// yields instead of at a deadline.
func spinWaiting(t *testing.T, n *Notifier, want int64) {
	t.Helper()
	for i := 0; n.waiting.Load() != want; i++ {
		if i > 10_000_000 {
			t.Fatalf("%d operations wait for a reservation, want %d", n.waiting.Load(), want)
		}
		runtime.Gosched()
	}
}

// yieldStore is a blockstore whose calls yield the processor a few times, so
// that operations pile up on reserved keys, wait, mark and overtake.
type yieldStore struct{ Blockstore }

func (y yieldStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	for range 3 {
		runtime.Gosched()
	}
	return y.Blockstore.Get(ctx, c)
}

func (y yieldStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for range 3 {
		runtime.Gosched()
	}
	return y.Blockstore.PutMany(ctx, blks)
}

// Stress: operations on few keys, with a store that yields, so that they
// keep waiting for each other's reservations and marks, some giving up as
// their ctx is cancelled. Nothing deadlocks, and once every subscription is
// removed no want, reservation or mark is left.
//
// With slow consumers (subtest "slow"), the subscriptions read nothing and
// are ended past WithMaxPending, some of those ends left pending with the
// operation that held up one of their keys (Subscription.closeSlow): every
// pending end completes, and Close waits for none left behind.
func TestIO_StressWaitersAndMarks(t *testing.T) {
	t.Run("readers", func(t *testing.T) { stressWaitersAndMarks(t, false) })
	t.Run("slow", func(t *testing.T) { stressWaitersAndMarks(t, true) })
}

// stressWaitersAndMarks is TestIO_StressWaitersAndMarks with slow consumers
// or without: six workers, each with its own random source, on eight blocks.
func stressWaitersAndMarks(t *testing.T, slow bool) {
	opts := []Option{WithShards(2)}
	if slow {
		opts = append(opts, WithBufferSize(1), WithMaxPending(1))
	}
	n, _ := newWithCancels(t, yieldStore{memStore()}, opts...)
	ended := func(err error) bool { return slow && errors.Is(err, ErrSlowConsumer) } // past WithMaxPending
	b := mkBlocks("marks", 8)
	run := &marksRun{n: n, b: b, keys: keysOf(b), ended: ended}
	var wg sync.WaitGroup
	finished := make(chan struct{})
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run.worker(t, w)
		}()
	}
	go func() { wg.Wait(); close(finished) }()
	done(t, finished, "the stressing operations")
	requireIndexEmpty(t, n)
	if slow {
		t.Logf("slow-consumer ends left pending: %d", n.parkSeq.Load())
	}
}

// marksRun is what the workers of one stressWaitersAndMarks share: the
// Notifier, its blocks b and their keys, and ended, which reports whether an
// error is the end of a slow consumer, allowed in the run with them.
type marksRun struct {
	n     *Notifier
	b     []blocks.Block
	keys  []cid.Cid
	ended func(error) bool
}

// worker is worker w of a run: 300 subscriptions, one after another, each
// with four random operations drawn from w's own source, then removed, having
// failed only as a slow consumer, if at all.
func (run *marksRun) worker(t *testing.T, w int) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(w), 7))
	for i := range 300 {
		s, err := run.n.NewSubscription(uint64(w*1000 + i))
		if err != nil {
			t.Error(err)
			return
		}
		for range 4 {
			run.op(t, s, r)
		}
		s.Remove()
		if err := s.Err(); err != nil && !run.ended(err) {
			t.Error(err)
		}
	}
}

// pick returns one to four of the run's keys, drawn by r, repeats allowed.
func (run *marksRun) pick(r *rand.Rand) []cid.Cid {
	ks := make([]cid.Cid, 1+r.IntN(4))
	for j := range ks {
		ks[j] = run.keys[r.IntN(len(run.keys))]
	}
	return ks
}

// op runs one random operation, drawn by r, on s: a Subscribe whose ctx may
// be cancelled before it is called, an Unsubscribe, a Publish of one block
// from a peer or local, or a Subscribe with a ctx that never ends.
func (run *marksRun) op(t *testing.T, s *Subscription, r *rand.Rand) {
	t.Helper()
	n, b := run.n, run.b
	switch r.IntN(4) {
	case 0:
		c, cancel := context.WithCancel(ctx)
		if r.IntN(3) == 0 {
			cancel() // may end a wait, or refuse the call at once
		}
		if err := s.Subscribe(c, run.pick(r)...); err != nil && !errors.Is(err, context.Canceled) && !run.ended(err) {
			t.Error(err)
		}
		cancel()
	case 1:
		s.Unsubscribe(run.pick(r)...)
	case 2:
		blk := b[r.IntN(len(b))]
		from := "peer"
		if r.IntN(4) == 0 {
			from = ""
		}
		if err := n.Publish(ctx, ResponseMessage{From: from, Blocks: []blocks.Block{blk}, Haves: run.pick(r)}); err != nil {
			t.Error(err)
		}
	default:
		if err := s.Subscribe(ctx, run.pick(r)...); err != nil && !run.ended(err) {
			t.Error(err)
		}
	}
}

// A waiter whose ctx ends while it waits returns its ctx's error and leaves
// no mark behind: an operation that started after it, and waits for the same
// reservation, proceeds as soon as that reservation is released. The waiter
// marks kA, the key it waits for (Notifier.markBusy); the later Subscribe
// finds kA reserved and sleeps on the reserver (Notifier.claimant); a mark
// left on kA by the waiter, which started before it, would hold it for good
// once it wakes.
//
// The later Subscribe once waited for the waiter's mark on kB, kept while
// the waiter slept on kA, and went on as the waiter gave up. A waiter now
// marks only the key it sleeps for, so that scene no longer arises.
func TestIO_CancelledWaiterLeavesNoMark(t *testing.T) {
	st := newStallStore()
	n, _ := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("cancelled-waiter", 1)
	kA := b[0].Cid()
	holder := mustSub(t, n, 1)
	require.NoError(t, holder.Subscribe(ctx, kA))
	releaseA := st.stall(t, kA)
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b}) }()
	require.Equal(t, kA, <-st.entered)

	waiter := mustSub(t, n, 2)
	wctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- waiter.Subscribe(wctx, kA) }() // waits for kA, marks it
	waitWaiting(t, n, 1)
	later := mustSub(t, n, 3)
	subscribed := make(chan error, 1)
	go func() { subscribed <- later.Subscribe(ctx, kA) }() // waits for kA's reservation
	waitWaiting(t, n, 2)

	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled)
	waitWaiting(t, n, 1) // the later Subscribe still waits, for kA's reservation
	releaseA()
	require.NoError(t, <-published)
	select {
	case err := <-subscribed:
		require.NoError(t, err)
	case <-time.After(hang):
		t.Fatal("the later Subscribe still waits: the cancelled waiter left its mark on kA")
	}
	require.False(t, waiter.Wants(kA), "the cancelled Subscribe added no want")
	require.Equal(t, b, recv(t, later).Blocks, "the later Subscribe finds kA, stored by the Publish")
	require.False(t, later.Wants(kA))
	waiter.Remove()
	later.Remove()
	holder.Remove()
	requireIndexEmpty(t, n)
}

// Close waits for the operations in the blockstore, even one that no
// subscription's close waits for: a local Publish stores a block nobody wants
// (G4 stores local blocks always), so only Close's wait for the operations in
// I/O keeps Close from returning before that block is stored. (Found by the
// mutation check: without that wait every other test passed.) The test waits
// until Close is parked waiting, or has returned, which would be the bug.
func TestClose_WaitsForAStalledPublishNobodyWaitsFor(t *testing.T) {
	st := newStallStore()
	n := New(st)
	b := mkBlocks("close-waits-for-io", 1)[0]
	release := st.stall(t, b.Cid())
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
	require.Equal(t, b.Cid(), <-st.entered)

	closed := make(chan struct{})
	go func() { defer close(closed); assert.NoError(t, n.Close()) }()
	for deadline := time.Now().Add(hang); !stacks.Parked([]string{"(*Notifier).close", "sync.(*WaitGroup).Wait"}, nil); runtime.Gosched() {
		select {
		case <-closed:
			t.Fatal("Close returned while a Publish was still in its PutMany")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Close neither returned nor waited")
		}
	}
	release()
	done(t, closed, "Close")
	has, err := st.Has(ctx, b.Cid())
	require.NoError(t, err)
	require.True(t, has, "once Close has returned, the Publish in progress has taken effect")
	require.NoError(t, <-published)
}

// Close waits for an operation that locked a shard before Close began, even
// one that no subscription's close waits for: a Publish whose cancel
// function still runs under k's shard, after it handed k to s, which wants
// nothing more, so that ending s takes no shard lock. Only the barrier, which
// takes every shard lock in turn, keeps Close from returning while the
// Publish is still in progress. The test waits until Close waits for k's
// shard, or has returned, which would be the bug.
func TestClose_WaitsForACancelFunctionUnderWay(t *testing.T) {
	n, k, entered, release := newWithSlowCancel(t)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, k.Cid()))
	published := make(chan struct{})
	go func() {
		defer close(published)
		assert.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{k}}))
	}()
	done(t, entered, "cancel function called by the Publish of k")

	closed := make(chan struct{})
	go func() { defer close(closed); assert.NoError(t, n.Close()) }()
	shard := &n.shards[n.shardOf(k.Cid())].mu
	for deadline := time.Now().Add(hang); waitmu.Waiting(shard) == 0; runtime.Gosched() {
		select {
		case <-closed:
			close(release)
			t.Fatal("Close returned while the Publish of k was still in its cancel function")
		default:
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("Close neither returned nor waited for k's shard")
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned while waiting for k's shard")
	default:
	}
	close(release)
	done(t, published, "Publish of k")
	done(t, closed, "Close")
	require.Equal(t, ErrClosed, s.Err())
}
