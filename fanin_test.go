package notifier

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	cid "github.com/ipfs/go-cid"

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
			w := newPositionsWalk(keeps)
			for step := range 10_000 {
				// Drift up for a while, then down, so that the count
				// crosses both thresholds again and again (by about 400
				// each way).
				up := (step/1000)%2 == 0
				w.move(t, step, up)
				e := w.x.lookupFor(w.k, w.pool[0])
				if len(w.in) == 0 {
					if e != nil || len(w.x.big) != 0 {
						t.Fatalf("step %d: nobody wants k, and the index holds %v and %d positions", step, e, len(w.x.big))
					}
					continue
				}
				w.check(t, step, e)
			}
			if w.dropped < 4 {
				t.Fatalf("the positions were dropped %d times, want the walk to cross the thresholds at least 4 times", w.dropped)
			}
		})
	}
}

// positionsWalk is the random walk of TestIndex_PositionsOfManySubscribers:
// an index x, the wants of one key k by subscriptions of pool, and the
// model of who wants k.
type positionsWalk struct {
	rng     *rand.Rand
	x       shardIndex
	k       cid.Cid
	pool    []*Subscription
	in      []*Subscription // the model: who wants k
	kept    bool            // whether positions are kept
	dropped int             // times they were dropped
}

// newPositionsWalk returns a walk, not begun, on a pool of 4*bigSubs
// subscriptions, which keep their storage if keeps.
func newPositionsWalk(keeps bool) *positionsWalk {
	w := &positionsWalk{rng: rand.New(rand.NewPCG(1, 2)), x: newShardIndex(), k: mkBlocks("fan-in", 1)[0].Cid()}
	w.pool = make([]*Subscription, 4*bigSubs)
	for i := range w.pool {
		w.pool[i] = &Subscription{id: uint64(i), keeps: keeps}
	}
	return w
}

// move begins the want of k of a random subscription of the pool that does
// not want it, more often if up, or ends that of a random one that does;
// endWant must find the want, and say whether it was the last.
func (w *positionsWalk) move(t *testing.T, step int, up bool) {
	t.Helper()
	rng, k := w.rng, w.k
	add := len(w.in) == 0 || (len(w.in) < len(w.pool) && rng.IntN(10) < map[bool]int{true: 7, false: 3}[up])
	if add {
		var s *Subscription
		for s == nil || slices.Contains(w.in, s) {
			s = w.pool[rng.IntN(len(w.pool))]
		}
		w.x.add(k, w.x.lookupFor(k, s), s, nil)
		w.in = append(w.in, s)
	} else {
		i := rng.IntN(len(w.in))
		s := w.in[i]
		found, _, last := w.x.endWant(k, s)
		if !found || last != (len(w.in) == 1) {
			t.Fatalf("step %d: endWant = found %v, last %v with %d wanting", step, found, last, len(w.in))
		}
		w.in = slices.Delete(w.in, i, i+1)
	}
}

// check checks, after a step, that the positions kept of e (k's interest)
// are exact, counts their drops, and looks 16 random subscriptions up in
// the index: each wants k exactly if the model says so.
func (w *positionsWalk) check(t *testing.T, step int, e *interest) {
	t.Helper()
	checkPositions(t, &w.x, e)
	if now := w.x.big[e] != nil; now != w.kept {
		w.kept = now
		if !now {
			w.dropped++
		}
	}
	for range 16 {
		s := w.pool[w.rng.IntN(len(w.pool))]
		if got, want := wants(&w.x, w.k, s), slices.Contains(w.in, s); got != want {
			t.Fatalf("step %d: wants(%d) = %v, want %v", step, s.id, got, want)
		}
	}
}

// subscribeMany makes count subscriptions of n, each wanting k.
func subscribeMany(t *testing.T, n *Notifier, k cid.Cid, count int) []*Subscription {
	t.Helper()
	ss := make([]*Subscription, 0, count)
	for i := range count {
		s, err := n.NewSubscriptionFunc(uint64(i), func(ResponseMessage) {})
		if err == nil {
			err = s.Subscribe(ctx, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	return ss
}

// keptPositions returns how many interests of n's one shard have the
// positions of their subscribers kept.
func keptPositions(n *Notifier) int {
	n.shards[0].mu.Lock()
	defer n.shards[0].mu.Unlock()
	return len(n.shards[0].idx.big)
}

// TestIndex_PositionsKeptOnlyAfterManyEnds: the positions of many
// subscribers of one key are not kept for a few ends of their wants, whose
// scans cost less than building them, and are from the bigSubs+1-th on.
func TestIndex_PositionsKeptOnlyAfterManyEnds(t *testing.T) {
	n := newClosedAtEnd(t, nil, WithShards(1))
	k := mkBlocks("fan-in ends", 1)[0].Cid()
	ss := subscribeMany(t, n, k, 3*bigSubs)
	for i, s := range ss[:bigSubs] {
		s.Unsubscribe(k)
		if kept := keptPositions(n); kept != 0 {
			t.Fatalf("positions kept after %d ends, want none before %d", i+1, bigSubs+1)
		}
	}
	ss[bigSubs].Unsubscribe(k)
	if kept := keptPositions(n); kept != 1 {
		t.Fatalf("the positions of %d interests kept after %d ends, want 1", kept, bigSubs+1)
	}
}

// TestIndex_DeliveryDropsPositions: a delivery to many subscribers, whose
// positions the ends of some of their wants made the index keep, leaves no
// positions behind.
func TestIndex_DeliveryDropsPositions(t *testing.T) {
	n := newClosedAtEnd(t, nil, WithShards(1))
	k := mkBlocks("fan-in delivery", 1)[0].Cid()
	for _, s := range subscribeMany(t, n, k, 3*bigSubs)[:bigSubs+1] {
		s.Unsubscribe(k)
	}
	if kept := keptPositions(n); kept != 1 {
		t.Fatalf("the positions of %d interests kept after %d ends, want 1", kept, bigSubs+1)
	}
	if err := n.Publish(ctx, ResponseMessage{From: "peer", Blocks: mkBlocks("fan-in delivery", 1)}); err != nil {
		t.Fatal(err)
	}
	if st := n.Stats(); st.Keys != 0 {
		t.Fatalf("%d keys wanted after the delivery, want 0", st.Keys)
	}
	if kept := keptPositions(n); kept != 0 {
		t.Fatalf("the positions of %d interests kept after the delivery, want 0", kept)
	}
}

// TestBurst_OneKeyOfManySubscribersGivesBackItsStorage: the list of a
// key's subscribers, and the positions kept for them, give back the storage
// of a burst of them: down to 10 (the positions are dropped), and down to
// bigSubs/2+1 (they are still kept, in a map of that size).
func TestBurst_OneKeyOfManySubscribersGivesBackItsStorage(t *testing.T) {
	const subs = 50_000 // without shrink, the list keeps 512 KB and the positions about 1 MB
	for _, left := range []int{10, bigSubs/2 + 1} {
		t.Run(fmt.Sprintf("left=%d", left), func(t *testing.T) {
			n := newClosedAtEnd(t, nil, WithShards(1))
			k := mkBlocks("fan-in burst", 1)[0].Cid()
			base := heaptest.Live()
			made := subscribeMany(t, n, k, subs)
			for _, s := range slices.Backward(made[left:]) {
				s.Remove()
			}
			kept := slices.Clone(made[:left])
			if want := min(1, max(0, left-bigSubs/2)); keptPositions(n) != want {
				t.Fatalf("the positions of %d interests kept, want %d", keptPositions(n), want)
			}
			heaptest.RequireBackTo(t, base, 256<<10)
			runtime.KeepAlive(kept)
		})
	}
}
