package notifier

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/bitswapsync/notifier/internal/heaptest"
)

// checkPositions fails t unless the positions of e's subscribers, if kept,
// are right, and are not kept when e has bigSubs/2 of them or fewer.
func checkPositions(t *testing.T, x *shardIndex, e *interest) {
	t.Helper()
	p := x.big[e]
	switch {
	case p != nil && len(e.subs) <= bigSubs/2:
		t.Fatalf("%d subscribers and their positions still kept", len(e.subs))
	case p == nil:
		return
	}
	if len(p.at) != len(e.subs) {
		t.Fatalf("%d positions kept for %d subscribers", len(p.at), len(e.subs))
	}
	for i, s := range e.subs {
		if j, ok := p.at[s]; !ok || j != i {
			t.Fatalf("subscriber at %d is kept at %d (%v)", i, j, ok)
		}
	}
}

// TestIndex_PositionsOfManySubscribers: wants of one key begun and ended in
// a random order, up and down across bigSubs and bigSubs/2 several times, so
// that the positions are kept and dropped again and again; after every step
// the positions kept are exact, and index lookups of random subscriptions
// agree with a model.
func TestIndex_PositionsOfManySubscribers(t *testing.T) {
	for _, keeps := range []bool{false, true} {
		t.Run(fmt.Sprintf("keeps=%v", keeps), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			x := newShardIndex()
			k := mkBlocks("fan-in", 1)[0].Cid()
			pool := make([]*Subscription, 4*bigSubs)
			for i := range pool {
				pool[i] = &Subscription{id: uint64(i), keeps: keeps}
			}
			var in []*Subscription    // the model: who wants k
			kept, dropped := false, 0 // whether positions are kept; times they were dropped
			for step := range 10_000 {
				// Drift up for a while, then down, so that the count
				// crosses both thresholds again and again (by about 400
				// each way).
				up := (step/1000)%2 == 0
				add := len(in) == 0 || (len(in) < len(pool) && rng.IntN(10) < map[bool]int{true: 7, false: 3}[up])
				if add {
					var s *Subscription
					for s == nil || slices.Contains(in, s) {
						s = pool[rng.IntN(len(pool))]
					}
					x.add(k, x.lookupFor(k, s), s, nil)
					in = append(in, s)
				} else {
					i := rng.IntN(len(in))
					s := in[i]
					found, _, last := x.endWant(k, s)
					if !found || last != (len(in) == 1) {
						t.Fatalf("step %d: endWant = found %v, last %v with %d wanting", step, found, last, len(in))
					}
					in = slices.Delete(in, i, i+1)
				}
				e := x.lookupFor(k, pool[0])
				if len(in) == 0 {
					if e != nil || len(x.big) != 0 {
						t.Fatalf("step %d: nobody wants k, and the index holds %v and %d positions", step, e, len(x.big))
					}
					continue
				}
				checkPositions(t, &x, e)
				if now := x.big[e] != nil; now != kept {
					kept = now
					if !now {
						dropped++
					}
				}
				for range 16 {
					s := pool[rng.IntN(len(pool))]
					if got, want := wants(&x, k, s), slices.Contains(in, s); got != want {
						t.Fatalf("step %d: wants(%d) = %v, want %v", step, s.id, got, want)
					}
				}
			}
			if dropped < 4 {
				t.Fatalf("the positions were dropped %d times, want the walk to cross the thresholds at least 4 times", dropped)
			}
		})
	}
}

// TestIndex_DeliveryDropsPositions: a delivery to many subscribers, whose
// positions an end of one of their wants made the index keep, leaves no
// positions behind.
func TestIndex_DeliveryDropsPositions(t *testing.T) {
	n := newClosedAtEnd(t, nil, WithShards(1))
	k := mkBlocks("fan-in delivery", 1)[0].Cid()
	var last *Subscription
	for i := range 2 * bigSubs {
		s, err := n.NewSubscriptionFunc(uint64(i), func(ResponseMessage) {})
		if err == nil {
			err = s.Subscribe(ctx, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		last = s
	}
	last.Unsubscribe(k)
	kept := func() int {
		n.shards[0].mu.Lock()
		defer n.shards[0].mu.Unlock()
		return len(n.shards[0].idx.big)
	}
	if kept() != 1 {
		t.Fatalf("the index keeps the positions of %d interests after an end of one of many wants, want 1", kept())
	}
	if err := n.Publish(ctx, ResponseMessage{From: "peer", Blocks: mkBlocks("fan-in delivery", 1)}); err != nil {
		t.Fatal(err)
	}
	if st := n.Stats(); st.Keys != 0 {
		t.Fatalf("%d keys wanted after the delivery, want 0", st.Keys)
	}
	if kept() != 0 {
		t.Fatalf("the index keeps the positions of %d interests after the delivery, want 0", kept())
	}
}

// TestBurst_OneKeyOfManySubscribersGivesBackItsStorage: the list of a
// key's subscribers gives back the storage of a burst of them.
func TestBurst_OneKeyOfManySubscribersGivesBackItsStorage(t *testing.T) {
	const subs = 50_000 // the list keeps 512 KB without shrink.Clip
	n := newClosedAtEnd(t, nil)
	k := mkBlocks("fan-in burst", 1)[0].Cid()
	base := heaptest.Live()
	made := make([]*Subscription, 0, subs)
	for i := range subs {
		s, err := n.NewSubscriptionFunc(uint64(i), func(ResponseMessage) {})
		if err == nil {
			err = s.Subscribe(ctx, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, s)
	}
	for _, s := range slices.Backward(made[10:]) {
		s.Remove()
	}
	kept := slices.Clone(made[:10])
	made = nil
	heaptest.RequireBackTo(t, base, 256<<10)
	runtime.KeepAlive(kept)
}
