package notifier

import (
	"context"
	"runtime"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// A function of the user that panics, or exits its goroutine, inside an
// operation (a delivery function, the cancel function) must not leave the
// Notifier half-way: the operation finishes first, every other target gets
// its message, no lock stays held, and the panic reaches the caller.

// requireNothingHeld fails unless every shard lock and the lock of every
// subscription of subs is free.
func requireNothingHeld(t *testing.T, n *Notifier, subs ...*Subscription) {
	t.Helper()
	for i := range n.shards {
		mu := &n.shards[i].mu
		require.True(t, mu.TryLock(), "shard %d's lock was left held", i)
		mu.Unlock()
	}
	for _, s := range subs {
		require.True(t, s.mu.TryLock(), "subscription %d's lock was left held", s.ID())
		s.mu.Unlock()
	}
}

// requireCloses fails unless Close returns. These tests close their
// Notifier only here, so that one left locked fails the test rather than
// hanging its cleanup.
func requireCloses(t *testing.T, n *Notifier) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = n.Close()
	}()
	done(t, closed, "Close after a function of the user panicked")
}

// calls counts the calls of the functions of one test, by name.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[name]++
}

func (c *calls) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// Two of three delivery functions panic: whichever order Publish calls
// them in, every one is called once, the channel subscription gets its
// message, the cancel function gets the key, and nothing stays locked.
func TestPanic_DeliveryFunctionsFinishThePublish(t *testing.T) {
	ctx := context.Background()
	cl := &cancelLog{}
	n := New(nil, WithShards(1), WithCancelFunc(cl.record))
	var c calls
	var subs []*Subscription
	for i, name := range []string{"panics-1", "records", "panics-2"} {
		s, err := n.NewSubscriptionFunc(uint64(i+1), func(ResponseMessage) {
			c.add(name)
			if name != "records" {
				panic(name)
			}
		})
		require.NoError(t, err)
		subs = append(subs, s)
	}
	ch := mustSub(t, n, 9)
	subs = append(subs, ch)
	blk := blocks.NewBlock([]byte("panic"))
	for _, s := range subs {
		require.NoError(t, s.Subscribe(ctx, blk.Cid()))
	}

	require.Panics(t, func() { _ = n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{blk}}) })

	requireNothingHeld(t, n, subs...)
	for _, name := range []string{"panics-1", "records", "panics-2"} {
		require.Equal(t, 1, c.get(name), "calls of the delivery function %q", name)
	}
	require.Equal(t, []blocks.Block{blk}, recv(t, ch).Blocks)
	require.Equal(t, []cid.Cid{blk.Cid()}, cl.take(), "the cancel function")
	require.False(t, n.Wanted(blk.Cid()))
	requireCloses(t, n)
}

// The cancel function panics after the channel subscriptions got their
// messages: it was called once, the shard it ran under is free again, and
// the subscription that a Publish found past WithMaxPending is closed as a
// slow consumer all the same.
func TestPanic_CancelFunctionFinishesTheOperation(t *testing.T) {
	ctx := context.Background()
	var c calls
	n := New(nil, WithShards(1), WithBufferSize(1), WithMaxPending(1), WithCancelFunc(func([]cid.Cid) {
		c.add("cancel")
		panic("cancel")
	}))
	blks := mkBlocks("slow", 4)
	slow := mustSub(t, n, 1)
	require.NoError(t, slow.Subscribe(ctx, keysOf(blks)...))
	other := mustSub(t, n, 2)
	require.NoError(t, other.Subscribe(ctx, keysOf(blks)...))
	// Nobody reads slow: the first message fills out, the second goes to
	// the backlog and to the drain goroutine, which holds it while it waits
	// for out; the third overflows WithMaxPending, or if the drain goroutine
	// took the second first, the fourth does.
	for i, b := range blks {
		require.Panics(t, func() { _ = n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) })
		requireNothingHeld(t, n, other) // not slow: its drain goroutine takes its lock now and then
		require.Equal(t, i+1, c.get("cancel"), "calls of the cancel function")
		require.Equal(t, []blocks.Block{b}, recv(t, other).Blocks)
	}
	require.ErrorIs(t, slow.Err(), ErrSlowConsumer, "the slow consumer found by a Publish whose cancel function panicked")
	requireCloses(t, n)
}

// A delivery function that exits its goroutine, as t.FailNow does, cannot be
// recovered, but the Publish still finishes before the goroutine ends.
func TestPanic_DeliveryFunctionGoexit(t *testing.T) {
	ctx := context.Background()
	cl := &cancelLog{}
	n := New(nil, WithShards(1), WithCancelFunc(cl.record))
	exits, err := n.NewSubscriptionFunc(1, func(ResponseMessage) { runtime.Goexit() })
	require.NoError(t, err)
	ch := mustSub(t, n, 2)
	blk := blocks.NewBlock([]byte("goexit"))
	require.NoError(t, exits.Subscribe(ctx, blk.Cid()))
	require.NoError(t, ch.Subscribe(ctx, blk.Cid()))

	returned := make(chan bool, 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{blk}})
		returned <- true
	}()
	done(t, ended, "the publishing goroutine")
	require.Empty(t, returned, "Publish returned although the delivery function exited the goroutine")

	requireNothingHeld(t, n, exits, ch)
	require.Equal(t, []blocks.Block{blk}, recv(t, ch).Blocks)
	require.Equal(t, []cid.Cid{blk.Cid()}, cl.take())
	requireCloses(t, n)
}

// Subscribe hands the blocks it finds in the blockstore to its own delivery
// function, on the one-key path (under the key's shard lock) and on the
// general one (in commit, under the shard locks of every key): if the
// function panics, the Subscribe has committed, the wants of the keys not
// found are recorded, and no lock stays held.
func TestPanic_DeliveryFunctionInSubscribe(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		stored  int
		missing int
	}{
		{"one key", 1, 0},
		{"general path", 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := promtest.Registry(t)
			bs := memStore()
			n := New(bs, WithShards(1), WithMetrics(kuboScope()))
			stored := mkBlocks(tc.name+"/stored", tc.stored)
			require.NoError(t, bs.PutMany(ctx, stored))
			missing := keysOf(mkBlocks(tc.name+"/missing", tc.missing))
			var got []blocks.Block
			s, err := n.NewSubscriptionFunc(1, func(m ResponseMessage) {
				got = append(got, m.Blocks...)
				panic("subscriber")
			})
			require.NoError(t, err)

			require.PanicsWithValue(t, "subscriber", func() { _ = s.Subscribe(ctx, append(keysOf(stored), missing...)...) })

			requireNothingHeld(t, n, s)
			require.ElementsMatch(t, stored, got)
			for _, k := range keysOf(stored) {
				require.False(t, s.Wants(k), "a found key")
			}
			for _, k := range missing {
				require.True(t, s.Wants(k), "a key the blockstore lacks")
			}
			subscribes := histogram(t, reg, promPrefix+"subscribe_seconds", "Time inside Subscribe, blockstore included, in seconds.")
			require.EqualValues(t, 1, subscribes.GetSampleCount(), "the Subscribe whose delivery function panicked is observed")
			requireCloses(t, n)
		})
	}
}
