package notifier

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// FuzzWaitersWokenByOneRelease covers the scenario that FuzzNotifierModel
// leaves out to stay deterministic (stall_fuzz_test.go: at most one
// operation waits): several operations woken by one release, which then run
// in parallel in an order nobody chooses. A Publish of one block per waiter
// stalls in its PutMany, all its keys reserved; each waiter, of the kind the
// input says, waits for its own key (and marks nothing another needs), by
// its own subscription; then the PutMany returns, or fails (fail). The
// waiters' operations commute, so the model is exact whatever their order:
// it computes each one's result alone (wokenModel), and the test checks every
// result, every subscription's messages and wants, the Stats and the cancel
// function's keys, and that Close leaves nothing.
func FuzzWaitersWokenByOneRelease(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3}, false)
	f.Add([]byte{0, 0, 4, 1}, true)
	f.Add([]byte{2, 2, 3, 0, 1}, false)
	f.Add([]byte{4, 3}, false)
	f.Fuzz(func(t *testing.T, kinds []byte, fail bool) {
		if len(kinds) < 2 {
			t.Skip("one waiter: FuzzNotifierModel's")
		}
		if len(kinds) > 6 {
			kinds = kinds[:6]
		}
		for i := range kinds {
			kinds[i] %= wokenKinds
		}
		synctest.Test(t, func(t *testing.T) { runWokenTogether(t, kinds, fail) })
	})
}

// The kinds of waiter of FuzzWaitersWokenByOneRelease; waiter i has its key
// K (the block it waits for) and a key X, and its subscription s.
const (
	wokenSubscribe   = iota // s.Subscribe(K, X), s wanting nothing
	wokenUnsubscribe        // s.Unsubscribe(K, X), s wanting K and X
	wokenRemove             // s.Remove(), s wanting K and X
	wokenPublish            // Publish of HAVEs of K and X, s wanting X
	wokenCancelled          // s.Subscribe(K, X), s wanting nothing, its ctx cancelled while it waits
	wokenKinds
)

// failPutStore is a stallStore whose PutMany fails, once released, if fail
// is set.
type failPutStore struct {
	*stallStore
	fail atomic.Bool
}

var errWokenPut = errors.New("woken: PutMany fails")

func (s *failPutStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	for _, b := range blks {
		s.wait(b.Cid())
	}
	if s.fail.Load() {
		return errWokenPut
	}
	return s.Blockstore.PutMany(ctx, blks)
}

// wokenModel is what waiter i of kind k leaves: the messages its
// subscription got, the keys it wants, whether it was removed, and the keys
// of the cancels it caused.
func wokenModel(k byte, stored bool, bK blocks.Block, kX cid.Cid) (msgs []ResponseMessage, wants, cancels []cid.Cid, removed bool) {
	kK := bK.Cid()
	got := []ResponseMessage{{Blocks: []blocks.Block{bK}}}
	switch k {
	case wokenSubscribe:
		if stored {
			return got, []cid.Cid{kX}, nil, false
		}
		return nil, []cid.Cid{kK, kX}, nil, false
	case wokenUnsubscribe:
		if stored {
			return got, nil, []cid.Cid{kK, kX}, false
		}
		return nil, nil, []cid.Cid{kK, kX}, false
	case wokenRemove:
		if stored {
			return got, nil, []cid.Cid{kK, kX}, true
		}
		return nil, nil, []cid.Cid{kK, kX}, true
	case wokenPublish:
		return []ResponseMessage{{From: "w", Haves: []cid.Cid{kX}}}, []cid.Cid{kX}, nil, false
	}
	return nil, nil, nil, false // wokenCancelled
}

// wokenRig is the state of one input of FuzzWaitersWokenByOneRelease.
type wokenRig struct {
	t         *testing.T
	n         *Notifier
	cancelled *cancelLog
	kinds     []byte
	b         []blocks.Block // b[i]: waiter i's block; its key is K
	xs        []cid.Cid      // xs[i]: waiter i's X
	subs      []*Subscription
	done      []chan error // what each waiter returns
	cancel    []context.CancelFunc
}

func runWokenTogether(t *testing.T, kinds []byte, fail bool) {
	st := &failPutStore{stallStore: newStallStore()}
	st.fail.Store(fail)
	r := newWokenRig(t, st, kinds)
	release := st.stall(t, r.b[0].Cid())
	published := make(chan error, 1)
	go func() { published <- r.n.Publish(ctx, ResponseMessage{Blocks: r.b}) }()
	require.Equal(t, r.b[0].Cid(), <-st.entered) // every key reserved
	r.startWaiters()

	release()
	if err := <-published; fail {
		require.ErrorIs(t, err, errWokenPut)
	} else {
		require.NoError(t, err)
	}
	for i, k := range kinds {
		if k != wokenCancelled {
			require.NoError(t, <-r.done[i], "waiter %d", i)
		}
	}
	synctest.Wait()
	r.check(!fail)
}

// newWokenRig makes the waiters' subscriptions, wanting what their kinds
// say.
func newWokenRig(t *testing.T, st *failPutStore, kinds []byte) *wokenRig {
	t.Helper()
	r := &wokenRig{t: t, kinds: kinds, b: mkBlocks("woken", len(kinds)), xs: keysOf(mkBlocks("woken-x", len(kinds)))}
	r.n, r.cancelled = newWithCancels(t, st, WithShards(4))
	for i, k := range kinds {
		s := mustSub(t, r.n, uint64(i+1))
		switch k {
		case wokenUnsubscribe, wokenRemove:
			require.NoError(t, s.Subscribe(ctx, r.b[i].Cid(), r.xs[i]))
		case wokenPublish:
			require.NoError(t, s.Subscribe(ctx, r.xs[i]))
		}
		r.subs = append(r.subs, s)
	}
	return r
}

// startWaiters starts every waiter, checks that each waits, and cancels
// those of kind wokenCancelled, which return having done nothing.
func (r *wokenRig) startWaiters() {
	t := r.t
	t.Helper()
	for i := range r.kinds {
		wctx, cancel := context.WithCancel(ctx)
		r.cancel = append(r.cancel, cancel)
		t.Cleanup(cancel)
		r.done = append(r.done, goAsleep(t, "waiter", func() error { return r.run(wctx, i) }))
	}
	spinWaiting(t, r.n, int64(len(r.kinds)))
	for i, k := range r.kinds {
		if k == wokenCancelled {
			r.cancel[i]()
			require.ErrorIs(t, <-r.done[i], context.Canceled)
		}
	}
}

// run is the call of waiter i.
func (r *wokenRig) run(wctx context.Context, i int) error {
	s, kK, kX := r.subs[i], r.b[i].Cid(), r.xs[i]
	switch r.kinds[i] {
	case wokenUnsubscribe:
		s.Unsubscribe(kK, kX)
		return nil
	case wokenRemove:
		s.Remove()
		return nil
	case wokenPublish:
		return r.n.Publish(ctx, ResponseMessage{From: "w", Haves: []cid.Cid{kK, kX}})
	}
	return s.Subscribe(wctx, kK, kX)
}

// check compares everything with wokenModel, then removes every
// subscription and closes the Notifier, which must leave nothing.
func (r *wokenRig) check(stored bool) {
	t := r.t
	t.Helper()
	var want Stats
	var cancels, left []cid.Cid
	for i, k := range r.kinds {
		msgs, wants, cs, removed := wokenModel(k, stored, r.b[i], r.xs[i])
		requireMessages(t, r.subs[i], msgs, removed)
		for _, key := range []cid.Cid{r.b[i].Cid(), r.xs[i]} {
			require.Equal(t, slices.Contains(wants, key), r.subs[i].Wants(key), "waiter %d (kind %d): want of %v", i, k, key)
			require.Equal(t, slices.Contains(wants, key), r.n.Wanted(key))
		}
		if !removed {
			want.Subscriptions++
		}
		want.Keys += len(wants)
		want.Wants += len(wants)
		cancels = append(cancels, cs...)
		left = append(left, wants...)
	}
	require.Equal(t, want, r.n.Stats())
	require.Equal(t, sortedOrNil(cancels), sortedOrNil(r.cancelled.take()))
	for _, s := range r.subs {
		s.Remove()
	}
	require.Equal(t, sortedOrNil(left), sortedOrNil(r.cancelled.take()))
	requireIndexEmpty(t, r.n)
	require.NoError(t, r.n.Close())
	require.Equal(t, Stats{}, r.n.Stats())
}

// requireMessages checks that s got msgs and no more, and that Messages()
// is closed if removed.
func requireMessages(t *testing.T, s *Subscription, msgs []ResponseMessage, removed bool) {
	t.Helper()
	for _, m := range msgs {
		require.Equal(t, m, recv(t, s))
	}
	if removed {
		_, open := <-s.Messages()
		require.False(t, open)
		require.NoError(t, s.Err())
		return
	}
	none(t, s)
}
