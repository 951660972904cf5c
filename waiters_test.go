package notifier

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// gateStore is a blockstore whose PutMany waits until the gate is opened,
// after saying on entered that it has been called.
type gateStore struct {
	Blockstore
	entered chan struct{}
	gate    chan struct{}
}

func (g *gateStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	g.entered <- struct{}{}
	<-g.gate
	return g.Blockstore.PutMany(ctx, blks)
}

// closesBehindStall sets up what BenchmarkClosesBehindStall measures: m
// subscriptions want keys A and B, a Publish of B stalls in its PutMany with
// B reserved, and every subscription is being removed, each Remove waiting
// with A and B marked. It returns once all m wait. open releases the
// PutMany; done waits for the Publish and every Remove, and checks that the
// index is empty.
func closesBehindStall(tb testing.TB, m int) (n *Notifier, open, done func()) {
	ctx := context.Background()
	bA := blocks.NewBlock([]byte("closes-behind-stall/A"))
	bB := blocks.NewBlock([]byte("closes-behind-stall/B"))
	st := &gateStore{Blockstore: memStore(), entered: make(chan struct{}, 1), gate: make(chan struct{})}
	n = New(st)
	subs := make([]*Subscription, m)
	for i := range subs {
		s, err := n.NewSubscription(uint64(i + 1))
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Subscribe(ctx, bA.Cid(), bB.Cid()); err != nil {
			tb.Fatal(err)
		}
		subs[i] = s
	}
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{bB}}) }()
	<-st.entered
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(s.Remove)
	}
	for i := 0; n.waiting.Load() != int64(m); i++ {
		if i > 10_000_000 {
			tb.Fatalf("%d closes wait, want %d", n.waiting.Load(), m)
		}
		runtime.Gosched()
	}
	done = func() {
		wg.Wait()
		if err := <-published; err != nil {
			tb.Fatal(err)
		}
		if got := n.Stats(); got != (Stats{}) {
			tb.Fatalf("after every close: %+v, want an empty index", got)
		}
		_ = n.Close()
	}
	return n, func() { close(st.gate) }, done
}

// Operations waiting on one key go on one after the other, each woken once
// as the one ahead of it goes on: the closes of M subscriptions that want a
// key, woken as the stalled PutMany they waited for returns, sleep at most
// once more each, on the close ahead of them, not M/2 times each on
// average, as they did when every waiter slept on the oldest mark and all
// woke whenever it went on (shardIndex.markAhead). Here they slept 2 to 31
// times in all, and 205 to 266 times with the oldest mark.
func TestIO_WaitersBehindOneKeyWakeOnce(t *testing.T) {
	const m = 32
	synctest.Test(t, func(t *testing.T) {
		n, open, done := closesBehindStall(t, m)
		before := n.waits.Load()
		open()
		done()
		slept := n.waits.Load() - before
		if slept > m {
			t.Errorf("the %d closes slept %d more times once the PutMany returned, want at most %d", m, slept, m)
		}
	})
}

// A chain of waiters on one key goes on, in the order they started, once
// the reservation they wait for is released, though their head gave up (its
// ctx ended) while that reservation was still held: the head leaves no mark
// on the key, which would hold the chain, now behind nobody, for good. The
// head marks kA, the only key it waits for (Notifier.markBusy); the others
// find kA reserved and sleep on its reserver, not on the head
// (Notifier.claimant), and still wait once the head has given up, as they
// need kA.
//
// The chain once slept on the head itself, which waited for another key, kJ,
// with a mark on kA, and went on as the head gave up (review). A waiter now
// marks only the key it sleeps for, so that scene no longer arises: the
// others find that key reserved, and sleep on its reserver.
func TestIO_ChainGoesOnWhenItsHeadGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n := New(st, WithShards(1))
		bA := blocks.NewBlock([]byte("chain-head/A"))
		kA := bA.Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, kA))
		u, releaseY, subY := st.reserveByGet(t, n, 2, kA, blocks.NewBlock([]byte("chain-head/Y")).Cid())

		hctx, cancel := context.WithCancel(ctx)
		head := make(chan error, 1)
		go func() { head <- n.Publish(hctx, ResponseMessage{From: "head", Haves: []cid.Cid{kA}}) }()
		synctest.Wait()
		require.EqualValues(t, 1, n.waiting.Load())
		res, want := queueChainBehindHead(t, n, kA, 5)
		cancel()
		require.ErrorIs(t, <-head, context.Canceled)
		synctest.Wait()
		require.EqualValues(t, len(res), n.waiting.Load(), "the chain waits for kA's reservation")
		releaseY()
		require.NoError(t, <-subY)
		synctest.Wait()
		requireChainWentOnInOrder(t, s, res, want)
		s.Remove()
		u.Remove()
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
	})
}

// queueChainBehindHead starts m Publishes of a HAVE of kA, w0 to w(m-1),
// each started once the one before it waits (with the head, m+1 waiters in
// all), so that they started in that order. It returns the channels their
// errors go to and their From fields, in the order started.
func queueChainBehindHead(t *testing.T, n *Notifier, kA cid.Cid, m int) (res []chan error, want []string) {
	t.Helper()
	res = make([]chan error, m)
	want = make([]string, m)
	for i := range res {
		res[i], want[i] = make(chan error, 1), fmt.Sprint("w", i)
		go func() { res[i] <- n.Publish(ctx, ResponseMessage{From: want[i], Haves: []cid.Cid{kA}}) }()
		spinWaiting(t, n, int64(i+2))
	}
	return res, want
}

// requireChainWentOnInOrder checks that every waiter of the chain, whose
// errors go to res, has returned nil by now, and that s got their messages
// in the order they started (want).
func requireChainWentOnInOrder(t *testing.T, s *Subscription, res []chan error, want []string) {
	t.Helper()
	m := len(res)
	var froms []string
	for i := range res {
		select {
		case err := <-res[i]:
			require.NoError(t, err)
		default:
			t.Fatalf("waiter %d of %d still sleeps after the head of the chain gave up and the reservation it waited for was released", i, m)
		}
		froms = append(froms, recv(t, s).From)
	}
	require.Equal(t, want, froms, "the chain goes on in the order it started")
}

// BenchmarkClosesBehindStall measures the cost of many closes that wait on
// one key: M subscriptions want a shared key A and a key B; a Publish of B
// stalls in its PutMany with B reserved, and all M subscriptions are removed
// meanwhile, so each close marks B and waits (Notifier.markBusy). Then the
// PutMany returns, and the closes go on one after the other, oldest first,
// each behind the marks of the older ones on B. ns/close
// is the time of a round, from the release of the PutMany to the return of
// the last Remove, per close; the setup is outside the timer.
//
// This is what a node sees when many sessions that want one popular block
// are cancelled while a slow disk stores another of their blocks.
func BenchmarkClosesBehindStall(b *testing.B) {
	for _, m := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("M=%d", m), func(b *testing.B) {
			b.ReportAllocs()
			b.StopTimer()
			for range b.N {
				_, open, done := closesBehindStall(b, m)
				b.StartTimer()
				open()
				done()
				b.StopTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*m), "ns/close")
		})
	}
}
