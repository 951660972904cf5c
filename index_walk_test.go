package notifier

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// A sequential model walk of the index and the keys maps: one
// goroutine, subscriptions of the three kinds (channel, delivery function,
// interest), many of them per key so that -small-thresholds keeps their
// positions, and every way a want ends. After every step: the cancel
// function's keys, Release's and ReleaseAll's results, Stats, each
// subscription's wants (AppendWanted and Wants) and its stale count. At the
// end, after every subscription is removed, the index is empty (G8).
func TestIndex_ModelWalk(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { indexModelWalk(t, seed) })
	}
}

type walkSub struct {
	s     *Subscription
	kind  int // 0 channel, 1 func, 2 interest
	wants map[int]bool
	got   map[int]int // blocks received (func subs via spy; channel drained)
	log   *msgLog
}

// walk is the state of one model walk: the Notifier, its blockstore, and the
// model (which blocks are stored, what each subscription wants and has
// received, and the keys the cancel function must get in this step).
type walk struct {
	t         *testing.T
	rng       *rand.Rand
	bs        Blockstore
	n         *Notifier
	cancels   *cancelLog
	blks      []blocks.Block
	keys      []cid.Cid
	idx       map[cid.Cid]int
	stored    []bool
	subs      []*walkSub
	nextID    uint64
	expCancel []int
	// what the step did, for the messages, and the results of a Release or
	// ReleaseAll to compare (checkRelease).
	what                   string
	gotRelease, expRelease []int
	checkRelease           bool
}

const walkKeys = 6

func indexModelWalk(t *testing.T, seed uint64) {
	const nsubs, steps = 36, 400
	w := &walk{t: t, rng: rand.New(rand.NewPCG(seed, 7)), bs: memStore(), idx: map[cid.Cid]int{}, nextID: 1}
	w.n, w.cancels = newWithCancels(t, w.bs, WithBufferSize(1<<14))
	w.blks = mkBlocks(fmt.Sprintf("rv-%d", seed), walkKeys)
	w.keys = keysOf(w.blks)
	for i, k := range w.keys {
		w.idx[k] = i
	}
	w.stored = make([]bool, walkKeys)
	for range nsubs {
		w.subs = append(w.subs, w.newSub())
	}
	for step := range steps {
		w.step()
		w.check(step)
	}
	for _, r := range w.subs {
		r.s.Remove()
	}
	requireIndexEmpty(t, w.n)
}

func (w *walk) newSub() *walkSub {
	kind := w.rng.IntN(3)
	r := &walkSub{kind: kind, wants: map[int]bool{}, got: map[int]int{}}
	var err error
	switch kind {
	case 0:
		r.s, err = w.n.NewSubscription(w.nextID)
	case 1:
		r.s, err = w.n.NewSubscriptionFunc(w.nextID, func(ResponseMessage) {})
		require.NoError(w.t, err)
		r.log = spyMessages(w.t, r.s)
	case 2:
		r.s, err = w.n.NewInterest(w.nextID)
	}
	require.NoError(w.t, err)
	w.nextID++
	return r
}

// wantedBy counts the subscriptions of kinds that want k.
func (w *walk) wantedBy(k int, kinds ...int) int {
	c := 0
	for _, r := range w.subs {
		if r.wants[k] && slices.Contains(kinds, r.kind) {
			c++
		}
	}
	return c
}

// deliver: the block of k reaches every non-interest want of it.
func (w *walk) deliver(k int) {
	hit := false
	for _, r := range w.subs {
		if r.kind != 2 && r.wants[k] {
			delete(r.wants, k)
			r.got[k]++
			hit = true
		}
	}
	if hit && w.wantedBy(k, 2) == 0 {
		w.expCancel = append(w.expCancel, k)
	}
}

// endWant ends r's want of k, if any, and reports whether Release reports k.
func (w *walk) endWant(r *walkSub, k int) (freed bool) {
	if !r.wants[k] {
		return false
	}
	delete(r.wants, k)
	if w.wantedBy(k, 0, 1, 2) == 0 {
		w.expCancel = append(w.expCancel, k)
		return true
	}
	return r.kind == 2 && w.wantedBy(k, 2) == 0
}

func (w *walk) pick() []int {
	m := 1 + w.rng.IntN(4)
	var out []int
	for range m {
		out = append(out, w.rng.IntN(walkKeys))
	}
	return out
}

func (w *walk) cids(ks []int) []cid.Cid {
	out := make([]cid.Cid, len(ks))
	for i, k := range ks {
		out[i] = w.keys[k]
	}
	return out
}

func (w *walk) toInts(cs []cid.Cid) []int {
	out := []int{}
	for _, c := range cs {
		out = append(out, w.idx[c])
	}
	slices.Sort(out)
	return out
}

// step takes one random step, on the Notifier and in the model.
func (w *walk) step() {
	w.expCancel, w.gotRelease, w.expRelease, w.checkRelease = nil, nil, nil, false
	r := w.subs[w.rng.IntN(len(w.subs))]
	switch op := w.rng.IntN(20); {
	case op < 7:
		w.subscribe(r)
	case op < 10:
		w.release(r)
	case op < 15:
		w.publish()
	case op < 16: // delete a block from the store
		k := w.rng.IntN(walkKeys)
		w.what = fmt.Sprintf("delete %d", k)
		w.stored[k] = false
		require.NoError(w.t, w.bs.(interface {
			DeleteBlock(context.Context, cid.Cid) error
		}).DeleteBlock(ctx, w.keys[k]))
	default:
		w.remove(r)
	}
}

func (w *walk) subscribe(r *walkSub) {
	ks := w.pick()
	w.what = fmt.Sprintf("subscribe %d(kind %d) %v", r.s.ID(), r.kind, ks)
	seenSub := map[int]bool{}
	for _, k := range ks {
		if r.wants[k] || seenSub[k] {
			continue
		}
		seenSub[k] = true
		if r.kind != 2 && w.stored[k] {
			if w.wantedBy(k, 0, 1) > 0 {
				r.wants[k] = true
				w.deliver(k)
			} else {
				r.got[k]++
			}
			continue
		}
		r.wants[k] = true
	}
	require.NoError(w.t, r.s.Subscribe(ctx, w.cids(ks)...), w.what)
}

// release is an Unsubscribe or a Release.
func (w *walk) release(r *walkSub) {
	ks := w.pick()
	w.what = fmt.Sprintf("release %d(kind %d) %v", r.s.ID(), r.kind, ks)
	w.expRelease = []int{}
	for _, k := range ks {
		if w.endWant(r, k) {
			w.expRelease = append(w.expRelease, k)
		}
	}
	slices.Sort(w.expRelease)
	if w.rng.IntN(2) == 0 {
		w.gotRelease = w.toInts(r.s.Release(w.cids(ks)...))
		w.checkRelease = true
	} else {
		r.s.Unsubscribe(w.cids(ks)...)
	}
}

func (w *walk) publish() {
	ks := w.pick()
	from := ""
	if w.rng.IntN(3) > 0 {
		from = "peer"
	}
	w.what = fmt.Sprintf("publish %q %v", from, ks)
	msg := ResponseMessage{From: from}
	seen := map[int]bool{}
	for _, k := range ks {
		msg.Blocks = append(msg.Blocks, w.blks[k])
		if seen[k] {
			continue
		}
		seen[k] = true
		if from == "" || w.wantedBy(k, 0, 1, 2) > 0 {
			w.stored[k] = true
		}
		w.deliver(k)
	}
	require.NoError(w.t, w.n.Publish(ctx, msg), w.what)
}

// remove is a Remove or a ReleaseAll, and a new subscription in its place.
func (w *walk) remove(r *walkSub) {
	w.what = fmt.Sprintf("remove %d(kind %d)", r.s.ID(), r.kind)
	w.expRelease = []int{}
	for k := range walkKeys {
		if w.endWant(r, k) {
			w.expRelease = append(w.expRelease, k)
		}
	}
	if w.rng.IntN(2) == 0 {
		w.gotRelease = w.toInts(r.s.ReleaseAll())
		w.checkRelease = true
	} else {
		r.s.Remove()
	}
	i := slices.Index(w.subs, r)
	w.subs[i] = w.newSub()
}

// check compares the Notifier with the model after a step: the results of
// a Release, the cancel function's keys, every subscription's wants and
// received blocks, and Stats.
func (w *walk) check(step int) {
	t, what := w.t, w.what
	if w.checkRelease {
		require.Equal(t, w.expRelease, w.gotRelease, "step %d: %s: released", step, what)
	}
	expCancel := append([]int{}, w.expCancel...)
	slices.Sort(expCancel)
	require.Equal(t, expCancel, w.toInts(w.cancels.take()), "step %d: %s: cancels", step, what)
	kset, pairs := map[int]bool{}, 0
	for _, q := range w.subs {
		for k := range walkKeys {
			if q.wants[k] {
				kset[k] = true
				pairs++
			}
		}
		w.checkSub(step, q)
	}
	require.Equal(t, Stats{Subscriptions: len(w.subs), Keys: len(kset), Wants: pairs}, w.n.Stats(), "step %d: %s", step, what)
}

// checkSub compares q's wants, its entries and the blocks it received with
// the model.
func (w *walk) checkSub(step int, q *walkSub) {
	t, what := w.t, w.what
	var exp []cid.Cid
	for k := range walkKeys {
		if q.wants[k] {
			exp = append(exp, w.keys[k])
		}
		require.Equal(t, q.wants[k], q.s.Wants(w.keys[k]), "step %d: %s: sub %d Wants(%d)", step, what, q.s.ID(), k)
	}
	require.Equal(t, exp, q.s.AppendWanted(nil, w.keys), "step %d: %s: sub %d wants", step, what, q.s.ID())
	live, ended, stale := countEntries(q.s)
	require.Equal(t, len(exp), live, "step %d: %s: sub %d live entries", step, what, q.s.ID())
	require.Equal(t, ended, stale, "step %d: %s: sub %d stale count", step, what, q.s.ID())
	if q.kind == 2 {
		return
	}
	for _, m := range w.received(q) {
		for _, b := range m.Blocks {
			q.got[w.idx[b.Cid()]]--
		}
	}
	for k, c := range q.got {
		require.Zero(t, c, "step %d: %s: sub %d block %d received (expected-minus-got)", step, what, q.s.ID(), k)
	}
}

// received returns the messages q has received since the last call.
func (w *walk) received(q *walkSub) []ResponseMessage {
	if q.kind == 1 {
		return q.log.take()
	}
	var ms []ResponseMessage
	for {
		select {
		case m := <-q.s.Messages():
			ms = append(ms, m)
		default:
			return ms
		}
	}
}
