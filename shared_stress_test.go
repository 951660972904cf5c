package notifier

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Stress tests in which several goroutines share each subscription. The
// other stress tests give each goroutine subscriptions of its own; here one
// subscription's own Subscribes, Unsubscribes and Releases wait behind each
// other's reservations and marks (dormant marks, wakeSubscribes,
// wakeStaleMarks), beside slow consumers whose end is left pending, interest
// subscriptions, Publishes and Removes. Each run is bounded by its counts;
// a hang fails through done. Written for a review of the waits and the
// pending closes (2026-12-06), which found no bug.

// sharedPick returns one to three of keys, drawn by r, repeats allowed.
func sharedPick(r *rand.Rand, keys []cid.Cid) []cid.Cid {
	ks := make([]cid.Cid, 1+r.IntN(3))
	for j := range ks {
		ks[j] = keys[r.IntN(len(keys))]
	}
	return ks
}

// TestStress_SharedSubscriptions: three goroutines each make 200
// subscriptions, one after another, and three workers share each one, with
// six random operations apiece (a Subscribe, sometimes with a ctx cancelled
// before it is called; Unsubscribe; Release; a Publish of one block from a
// peer or local, naming HAVEs; Remove), then Remove it. With and without
// WithMaxPending(1), two shards, a blockstore that yields in every call;
// up to 40 runs of each, as many as start within about a second (at least
// four). Every operation returns, a Subscribe fails only as an ended
// subscription or a cancelled ctx may make it, and the index is empty at the
// end (G7, G8, G10, G11).
func TestStress_SharedSubscriptions(t *testing.T) {
	for _, slow := range []bool{false, true} {
		var waits uint64
		deadline := time.Now().Add(time.Second)
		round := 0
		for ; round < 40 && (round < 4 || time.Now().Before(deadline)); round++ {
			waits += stressSharedSubscriptions(t, slow, uint64(round))
		}
		t.Logf("slow consumers %v: %d runs, %d waits", slow, round, waits)
		require.NotZero(t, waits, "no operation waited for another's blockstore call")
	}
}

// stressSharedSubscriptions is one run of TestStress_SharedSubscriptions,
// seeded by seed: three goroutines make subscriptions that three workers
// share. It returns how many operations waited for another's blockstore call.
func stressSharedSubscriptions(t *testing.T, slow bool, seed uint64) (waits uint64) {
	opts := []Option{WithShards(2)}
	if slow {
		opts = append(opts, WithBufferSize(1), WithMaxPending(1))
	}
	n, _ := newWithCancels(t, yieldStore{memStore()}, opts...)
	b := mkBlocks("shared-stress", 6)
	keys := keysOf(b)
	var outer sync.WaitGroup
	for g := range 3 {
		outer.Go(func() { sharedSubscriptionsOf(t, n, b, keys, seed, g) })
	}
	finished := make(chan struct{})
	go func() { outer.Wait(); close(finished) }()
	done(t, finished, "the operations on shared subscriptions")
	requireIndexEmpty(t, n)
	return n.waits.Load()
}

// sharedAllowed reports whether err is one a Subscribe on a shared
// subscription may return: an ended subscription (slow consumer, Close) or a
// cancelled ctx.
func sharedAllowed(err error) bool {
	return err == nil || errors.Is(err, ErrSlowConsumer) || errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled)
}

// sharedSubscriptionsOf is goroutine g of a run: 200 subscriptions of n, one
// after another (an interest subscription one time in four, drawn from g's
// own source), each shared by three workers on blocks b and then removed.
func sharedSubscriptionsOf(t *testing.T, n *Notifier, b []blocks.Block, keys []cid.Cid, seed uint64, g int) {
	t.Helper()
	rg := rand.New(rand.NewPCG(seed, uint64(g)))
	for i := range 200 {
		id := uint64(g*100000 + i)
		var s *Subscription
		var err error
		if rg.IntN(4) == 0 {
			s, err = n.NewInterest(id)
		} else {
			s, err = n.NewSubscription(id)
		}
		if err != nil {
			t.Error(err)
			return
		}
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				sharedWorker(t, n, s, b, keys, rand.New(rand.NewPCG(seed*7+uint64(i), uint64(g*10+w))))
			})
		}
		wg.Wait()
		s.Remove()
	}
}

// sharedWorker runs six random operations, drawn by r, on s (shared with
// other workers) and n: a Subscribe, an Unsubscribe, a Release, a Publish of
// one of b, or now and then a Remove; keys are b's keys.
func sharedWorker(t *testing.T, n *Notifier, s *Subscription, b []blocks.Block, keys []cid.Cid, r *rand.Rand) {
	t.Helper()
	for range 6 {
		switch r.IntN(6) {
		case 0, 1:
			sharedSubscribe(t, s, r, keys)
		case 2:
			s.Unsubscribe(sharedPick(r, keys)...)
		case 3:
			s.Release(sharedPick(r, keys)...)
		case 4:
			sharedPublish(t, n, b, r, keys)
		default:
			if r.IntN(4) == 0 {
				s.Remove()
			}
		}
	}
}

// sharedSubscribe subscribes s to keys drawn by r, with a ctx that one time
// in five is cancelled before the call; the Subscribe may fail only as
// sharedAllowed says.
func sharedSubscribe(t *testing.T, s *Subscription, r *rand.Rand, keys []cid.Cid) {
	t.Helper()
	c, cancel := context.WithCancel(ctx)
	if r.IntN(5) == 0 {
		cancel()
	}
	if err := s.Subscribe(c, sharedPick(r, keys)...); !sharedAllowed(err) {
		t.Errorf("Subscribe: %v", err)
	}
	cancel()
}

// sharedPublish publishes one of b, drawn by r, with HAVEs of keys, from a
// peer or (one time in three) local; the Publish must not fail.
func sharedPublish(t *testing.T, n *Notifier, b []blocks.Block, r *rand.Rand, keys []cid.Cid) {
	t.Helper()
	from := "peer"
	if r.IntN(3) == 0 {
		from = ""
	}
	msg := ResponseMessage{From: from, Blocks: []blocks.Block{b[r.IntN(len(b))]}, Haves: sharedPick(r, keys)}
	if err := n.Publish(ctx, msg); err != nil {
		t.Errorf("Publish: %v", err)
	}
}

// TestStress_CloseDuringSharedSubscriptions: six workers run 200 random
// operations each on four shared slow subscriptions (WithMaxPending(1)), and
// Close comes after a random number of them. Every operation and Close
// return, the index is empty, and every subscription reports why it ended
// (G6, G7, G8). Over the 400 runs operations must have waited for others'
// blockstore calls, or the test would not test what it is for.
func TestStress_CloseDuringSharedSubscriptions(t *testing.T) {
	var waits, parks uint64
	for round := range 400 {
		w, p := closeDuringSharedSubscriptions(t, uint64(round))
		waits += w
		parks += p
	}
	t.Logf("%d waits, %d parked pending closes", waits, parks)
	require.NotZero(t, waits, "no operation waited for another's blockstore call")
}

// closeDuringSharedSubscriptions is one run of
// TestStress_CloseDuringSharedSubscriptions, seeded by seed. It returns how
// many operations waited for another's blockstore call and how many pending
// closes were parked.
func closeDuringSharedSubscriptions(t *testing.T, seed uint64) (waits, parks uint64) {
	n := New(yieldStore{memStore()}, WithShards(2), WithBufferSize(1), WithMaxPending(1), WithCancelFunc(func([]cid.Cid) {}))
	b := mkBlocks("shared-close-stress", 5)
	keys := keysOf(b)
	subs := make([]*Subscription, 4)
	for i := range subs {
		s, err := n.NewSubscription(uint64(i))
		require.NoError(t, err)
		subs[i] = s
	}
	start := make(chan struct{})
	ops := &opCount{trigger: make(chan struct{}), at: rand.New(rand.NewPCG(seed, 98)).IntN(1100)}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			<-start
			sharedCloseWorker(n, subs, b, keys, ops, rand.New(rand.NewPCG(seed, uint64(w))))
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	closed := closeAfter(n, ops.trigger, finished)
	close(start)
	done(t, finished, "the operations on shared subscriptions")
	done(t, closed, "Close")
	requireIndexEmpty(t, n)
	for _, s := range subs {
		if s.Err() == nil {
			t.Errorf("subscription %d: Err nil after Close", s.ID())
		}
	}
	return n.waits.Load(), n.parkSeq.Load()
}

// opCount counts the operations begun by all workers of a run and closes
// trigger as the at-th begins: the operation that Close follows.
type opCount struct {
	mu      sync.Mutex // guards begun
	begun   int
	at      int
	trigger chan struct{} // closed by the operation that Close follows
}

// begin counts one more operation begun, closing trigger if it is the at-th.
func (o *opCount) begin() {
	o.mu.Lock()
	o.begun++
	if o.begun == o.at {
		close(o.trigger)
	}
	o.mu.Unlock()
}

// sharedCloseWorker runs 200 random operations, drawn by r, on subs and n,
// counting each in ops as it begins: a Subscribe, an Unsubscribe, a Publish
// of one of b (keys are b's keys) or a Release. Their errors are ignored, as
// Close may come at any time.
func sharedCloseWorker(n *Notifier, subs []*Subscription, b []blocks.Block, keys []cid.Cid, ops *opCount, r *rand.Rand) {
	for range 200 {
		ops.begin()
		s := subs[r.IntN(len(subs))]
		switch r.IntN(5) {
		case 0, 1:
			_ = s.Subscribe(ctx, sharedPick(r, keys)...) // ended subscriptions and Close refuse
		case 2:
			s.Unsubscribe(sharedPick(r, keys)...)
		case 3:
			_ = n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b[r.IntN(len(b))]}, Haves: sharedPick(r, keys)}) // ErrClosed after Close
		default:
			s.Release(sharedPick(r, keys)...)
		}
	}
}

// closeAfter starts Close of n once trigger or finished is closed (finished
// if the operation Close was to follow is past the last), and returns a
// channel closed once Close returns.
func closeAfter(n *Notifier, trigger, finished chan struct{}) chan struct{} {
	closed := make(chan struct{})
	go func() {
		select {
		case <-trigger:
		case <-finished: // at is past the last operation
		}
		_ = n.Close() // always nil
		close(closed)
	}()
	return closed
}
