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

func stressSharedSubscriptions(t *testing.T, slow bool, seed uint64) (waits uint64) {
	opts := []Option{WithShards(2)}
	if slow {
		opts = append(opts, WithBufferSize(1), WithMaxPending(1))
	}
	n, _ := newWithCancels(t, yieldStore{memStore()}, opts...)
	b := mkBlocks("shared-stress", 6)
	keys := keysOf(b)
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, ErrSlowConsumer) || errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled)
	}
	var outer sync.WaitGroup
	for g := range 3 {
		outer.Go(func() {
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
						r := rand.New(rand.NewPCG(seed*7+uint64(i), uint64(g*10+w)))
						for range 6 {
							switch r.IntN(6) {
							case 0, 1:
								c, cancel := context.WithCancel(ctx)
								if r.IntN(5) == 0 {
									cancel()
								}
								if err := s.Subscribe(c, sharedPick(r, keys)...); !allowed(err) {
									t.Errorf("Subscribe: %v", err)
								}
								cancel()
							case 2:
								s.Unsubscribe(sharedPick(r, keys)...)
							case 3:
								s.Release(sharedPick(r, keys)...)
							case 4:
								from := "peer"
								if r.IntN(3) == 0 {
									from = ""
								}
								msg := ResponseMessage{From: from, Blocks: []blocks.Block{b[r.IntN(len(b))]}, Haves: sharedPick(r, keys)}
								if err := n.Publish(ctx, msg); err != nil {
									t.Errorf("Publish: %v", err)
								}
							default:
								if r.IntN(4) == 0 {
									s.Remove()
								}
							}
						}
					})
				}
				wg.Wait()
				s.Remove()
			}
		})
	}
	finished := make(chan struct{})
	go func() { outer.Wait(); close(finished) }()
	done(t, finished, "the operations on shared subscriptions")
	requireIndexEmpty(t, n)
	return n.waits.Load()
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
	trigger := make(chan struct{}) // closed by the operation that Close follows
	at := rand.New(rand.NewPCG(seed, 98)).IntN(1100)
	var mu sync.Mutex // guards begun
	begun := 0
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			<-start
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for range 200 {
				mu.Lock()
				begun++
				if begun == at {
					close(trigger)
				}
				mu.Unlock()
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
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	closed := make(chan struct{})
	go func() {
		select {
		case <-trigger:
		case <-finished: // at is past the last operation
		}
		_ = n.Close() // always nil
		close(closed)
	}()
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
