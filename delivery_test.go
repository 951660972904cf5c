package notifier

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// seqHave publishes a HAVE for k whose From carries i, so the receiver can
// check the order.
func seqHave(t *testing.T, n *Notifier, k cid.Cid, i int) {
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: fmt.Sprint(i), Haves: []cid.Cid{k}}))
}

// G6: Publish does not wait for a subscriber that does not read, and the
// subscriber later gets every message in publish order. synctest makes the
// check immediate: synctest.Wait returns once the publisher has returned or
// is blocked for good (on the full channel, or on a lock a blocked Publish
// holds), so a Publish that waits for the reader fails the test at once
// rather than by a timeout.
func TestPublish_NeverBlocksOnSlowSubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// No deferred Close: after a failure it would wait, on a lock, for
		// the blocked Publish, where synctest cannot see a deadlock.
		n := New(memStore(), WithBufferSize(1))
		k := mkBlocks("slow", 1)[0].Cid()
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, k))
		const count = 1000
		published := make(chan struct{})
		go func() {
			defer close(published)
			for i := range count {
				seqHave(t, n, k, i)
			}
		}()
		synctest.Wait()
		select {
		case <-published:
		default:
			t.Fatal("Publish blocked on a subscriber that does not read")
		}
		for i := range count {
			require.Equal(t, fmt.Sprint(i), recv(t, s).From)
		}
		none(t, s)
		require.NoError(t, n.Close())
	})
}

// G6: order holds while the reader and the publisher run at the same time,
// across the switch between direct sends and the backlog.
func TestSubscription_KeepsPublishOrderWhileDraining(t *testing.T) {
	n, _ := newWithCancels(t, memStore(), WithBufferSize(2))
	k := mkBlocks("order", 1)[0].Cid()
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, k))
	const count = 5000
	go func() {
		for i := range count {
			seqHave(t, n, k, i)
		}
	}()
	for i := range count {
		require.Equal(t, fmt.Sprint(i), recv(t, s).From)
	}
}

// G6: concurrent publishes reach all the subscriptions they share in one
// order: no two subscriptions see them in different orders.
func TestSubscriptions_SeeConcurrentPublishesInOneOrder(t *testing.T) {
	n, _ := newWithCancels(t, memStore(), WithShards(64))
	b := mkBlocks("one-order", 2)
	var subs []*Subscription
	for i := range 8 {
		s := mustSub(t, n, uint64(i))
		require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
		subs = append(subs, s)
	}
	const rounds = 2000
	var wg sync.WaitGroup
	for p, k := range keysOf(b) {
		wg.Go(func() {
			for i := range rounds {
				require.NoError(t, n.Publish(ctx, ResponseMessage{From: fmt.Sprint(p, ":", i), Haves: []cid.Cid{k}}))
			}
		})
	}
	var first []string
	for i, s := range subs {
		var got []string
		for range 2 * rounds {
			got = append(got, recv(t, s).From)
		}
		if i == 0 {
			first = got
		} else {
			require.Equal(t, first, got, "subscription %d saw another order than subscription 0", i)
		}
	}
	wg.Wait()
}

// G6: past WithMaxPending the subscription ends with ErrSlowConsumer, its wants
// are released and reported, and nothing else is affected. synctest orders
// the drain goroutine: synctest.Wait returns once it is blocked handing its
// message to the full channel.
func TestSubscription_SlowConsumerIsEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cancels := &cancelLog{}
		n := New(memStore(), WithBufferSize(1), WithMaxPending(2), WithCancelFunc(cancels.record))
		defer func() { require.NoError(t, n.Close()) }()
		b := mkBlocks("laggard", 2)
		slow, fast := mustSub(t, n, 1), mustSub(t, n, 2)
		require.NoError(t, slow.Subscribe(ctx, keysOf(b)...))
		require.NoError(t, fast.Subscribe(ctx, b[0].Cid()))
		publish := func(i int) {
			seqHave(t, n, b[0].Cid(), i)
			require.Equal(t, fmt.Sprint(i), recv(t, fast).From)
		}
		publish(0) // in slow's channel
		publish(1) // in the drain goroutine's hands
		synctest.Wait()
		publish(2) // queued
		publish(3) // queued: two wait, the bound
		require.NoError(t, slow.Err())
		require.Empty(t, cancels.take())

		publish(4) // overflows; slow is ended before Publish returns
		require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
		require.Equal(t, []cid.Cid{b[1].Cid()}, cancels.take(), "b[0] is still wanted by fast")
		require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
		got := waitClosed(t, slow)
		require.Len(t, got, 1, "what was in the channel is kept; the backlog is dropped")
		require.Equal(t, "0", got[0].From)
		require.ErrorIs(t, slow.Subscribe(ctx, b[1].Cid()), ErrSlowConsumer)

		again, err := n.NewSubscription(1)
		require.NoError(t, err, "the session ID is free as soon as the slow subscription is ended")
		again.Remove()
	})
}

// G6: a consumer that has read everything is never ended, however small
// WithMaxPending is: the message being handed over does not count.
func TestSubscription_CaughtUpConsumerIsNotEnded(t *testing.T) {
	n, _ := newWithCancels(t, nil, WithBufferSize(0), WithMaxPending(1))
	k := mkBlocks("caught-up", 1)[0].Cid()
	for i := range 500 {
		s := mustSub(t, n, uint64(i))
		require.NoError(t, s.Subscribe(ctx, k))
		seqHave(t, n, k, 0) // into the backlog; the drain goroutine takes it
		recv(t, s)          // caught up
		seqHave(t, n, k, 1)
		require.NoError(t, s.Err(), "round %d: a caught-up consumer was ended", i)
		s.Remove()
	}
}

// G6/G7: idle subscriptions cost no goroutine, and a backlog's goroutine exits
// once the backlog is drained.
func TestSubscription_IdleCostsNoGoroutine(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	n := New(memStore(), WithBufferSize(1))
	defer func() { require.NoError(t, n.Close()) }()
	b := mkBlocks("idle", 64)
	var subs []*Subscription
	for i := range 1000 {
		s := mustSub(t, n, uint64(i))
		require.NoError(t, s.Subscribe(ctx, keysOf(b[i%64:i%64+1])...))
		subs = append(subs, s)
	}
	require.NoError(t, goleak.Find(append(leakOpts, baseline)...), "idle subscriptions run goroutines")

	for i := range 5 { // overflow the channel of subscription 0 and start its drainer
		seqHave(t, n, b[0].Cid(), i)
	}
	for _, s := range subs {
		if s.ID()%64 == 0 {
			for range 5 {
				recv(t, s)
			}
		}
	}
	require.NoError(t, goleak.Find(append(leakOpts, baseline)...), "a drained subscription keeps a goroutine")
}

// A func subscription takes its messages synchronously, in order.
func TestSubscriptionFunc_DeliversSynchronously(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("func", 2)
	var got []ResponseMessage
	var unheld []cid.Cid // keys whose shard lock f ran without; checked after, as f must not fail the test under locks
	s, err := n.NewSubscriptionFunc(1, func(m ResponseMessage) {
		got = append(got, m)
		for _, k := range append(keysOf(m.Blocks), m.Haves...) {
			if !n.shardHeld(k) {
				unheld = append(unheld, k)
			}
		}
	})
	require.NoError(t, err)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: keysOf(b)}))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
	require.Equal(t, []ResponseMessage{
		{From: "p", Haves: keysOf(b)},
		{From: "p", Blocks: []blocks.Block{b[0]}},
	}, got)
	require.Empty(t, unheld, "f called without the shard locks of its message")
	require.Zero(t, cap(s.Messages()), "the done channel needs no buffer")
	s.Remove()
	_, open := <-s.Messages()
	require.False(t, open)

	interest, err := n.NewSubscriptionFunc(2, nil)
	require.NoError(t, err)
	require.NoError(t, interest.Subscribe(ctx, b[1].Cid()))
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, n.Stats())
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:]}))
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// lockTargets locks several target subscriptions without waiting, in any
// order; when one is held it lets go of those it took and waits for them in
// ascending seq, the lock order. Here c, a and b (created in that seq order:
// a, b, c) want k in the order c, a, b, and the test holds b's lock. The
// Publish takes c and a, fails on b, lets them go, and waits for b holding
// only a, which comes before b in the lock order: c must be free meanwhile,
// or an operation that holds c and waits for a, in lock order, would deadlock
// with it. Once b is free, all three get the block.
func TestLockTargets_FallsBackToLockOrder(t *testing.T) {
	n, _ := newWithCancels(t, nil)
	a, b, c := mustSub(t, n, 1), mustSub(t, n, 2), mustSub(t, n, 3)
	k := mkBlocks("fallback", 1)[0]
	for _, s := range []*Subscription{c, a, b} {
		require.NoError(t, s.Subscribe(ctx, k.Cid()))
	}
	b.mu.Lock()
	var once sync.Once
	unlockB := func() { once.Do(b.mu.Unlock) }
	t.Cleanup(unlockB) // before the Notifier's Close, which needs it
	published := make(chan struct{})
	go func() {
		defer close(published)
		assert.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{k}}))
	}()
	waitWaiters(t, &b.mu, 1) // lockTargets
	require.True(t, c.mu.TryLock(), "lockTargets waits for b holding c's lock, out of lock order")
	c.mu.Unlock()
	unlockB()
	done(t, published, "the Publish")
	for _, s := range []*Subscription{a, b, c} {
		require.Equal(t, []blocks.Block{k}, recv(t, s).Blocks)
	}
}

// A want ends only with its message queued (route locks the targets before
// it ends any want). Readers under the subscription's lock alone see the end
// of a want: AppendWanted, and a one-key Subscribe whose hit commits under
// s.mu. While a Publish P of j waits for the lock of another target u, s must
// not look done with j yet: if it did, an operation called after that
// observation (a hit of k, or a Publish of k, k in another shard) could reach
// s before P's message, although P took effect first (G6, publish order).
// Found by review; before the fix both cases failed every run.
func TestRoute_WantEndsOnlyWithItsMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		next func(t *testing.T, n *Notifier, s *Subscription, k blocks.Block) // the operation called after the observation
	}{
		{"hit of a stored key", func(t *testing.T, _ *Notifier, s *Subscription, k blocks.Block) {
			require.NoError(t, s.Subscribe(ctx, k.Cid()))
		}},
		{"publish of another key", func(t *testing.T, n *Notifier, s *Subscription, k blocks.Block) {
			require.NoError(t, s.Subscribe(ctx, k.Cid()))
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p2", Blocks: []blocks.Block{k}}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := memStore()
			n := New(bs)
			t.Cleanup(func() { require.NoError(t, n.Close()) })
			j := mkBlocks("route-order-j", 1)[0]
			k := keysInOtherShards(n, j.Cid(), "route-order-k", 1)[0]
			if tc.name == "hit of a stored key" {
				require.NoError(t, bs.PutMany(ctx, []blocks.Block{k}))
			}
			u := mustSub(t, n, 1) // the lower seq: P locks u first once it must wait
			s := mustSub(t, n, 2)
			require.NoError(t, u.Subscribe(ctx, j.Cid()))
			require.NoError(t, s.Subscribe(ctx, j.Cid()))
			unlockU := holdForAMoment(t, u)
			published := make(chan error, 1)
			go func() {
				published <- n.Publish(ctx, ResponseMessage{From: "p1", Blocks: []blocks.Block{j}})
			}()
			waitWaiters(t, &u.mu, 1)                                  // lockTargets
			done := len(s.AppendWanted(nil, []cid.Cid{j.Cid()})) == 0 // P has taken effect for s
			tc.next(t, n, s, k)
			unlockU()
			require.NoError(t, <-published)
			requireOrderAfterRead(t, s, done, j.Cid(), k.Cid())
		})
	}
}

// The same window on the Subscribe side: a Subscribe whose check finds a
// block that another subscription u wants too delivers it through route, so
// it locks the targets (u and s) before it records any want of s. Else,
// while it waits for u's lock, AppendWanted on s sees the Subscribe done (its
// want of k not yet ended, or its want of another key k1), and a hit of k2
// called after that observation reaches s before k's block (G6). Found by
// review; before the fix both cases failed every run.
func TestSubscribe_FoundSharedBlockIsQueuedWithTheWants(t *testing.T) {
	for _, tc := range []struct {
		name    string
		missing bool // the Subscribe names k1 too, a key not stored, and the observation reads k1
	}{
		{"the found key", false},
		{"another key of the Subscribe", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := memStore()
			n := New(bs)
			t.Cleanup(func() { require.NoError(t, n.Close()) })
			k := mkBlocks("found-shared-k", 1)[0]
			others := keysInOtherShards(n, k.Cid(), "found-shared-o", 2) // the Subscribe holds k's and k1's shards while it waits for u
			k1, k2 := others[0], others[1]                               // k1 never stored; k2 stored, for the hit after the observation
			u := mustSub(t, n, 1)                                        // the lower seq: the Subscribe locks u first once it must wait
			s := mustSub(t, n, 2)
			require.NoError(t, u.Subscribe(ctx, k.Cid()))
			require.NoError(t, bs.PutMany(ctx, []blocks.Block{k, k2})) // behind the Notifier's back
			keys, observed := []cid.Cid{k.Cid()}, k.Cid()
			if tc.missing {
				keys, observed = []cid.Cid{k1.Cid(), k.Cid()}, k1.Cid()
			}
			unlockU := holdForAMoment(t, u)
			subscribed := make(chan error, 1)
			go func() { subscribed <- s.Subscribe(ctx, keys...) }()
			waitWaiters(t, &u.mu, 1)                                  // subscribeAll
			done := len(s.AppendWanted(nil, []cid.Cid{observed})) > 0 // the Subscribe has taken effect for s
			require.NoError(t, s.Subscribe(ctx, k2.Cid()))            // a hit, committed under s.mu alone
			unlockU()
			require.NoError(t, <-subscribed)
			require.Equal(t, k.Cid(), recv(t, u).Blocks[0].Cid())
			requireOrderAfterRead(t, s, done, k.Cid(), k2.Cid())
		})
	}
}

// A Subscribe that found a block others want, and locked them, releases
// every lock if its subscription ends during the check: it returns
// ErrClosed, u's lock is free, and u still gets the block's next Publish.
func TestSubscribe_FoundSharedBlockClosedDuringCheck(t *testing.T) {
	mem := memStore()
	hs := &hookStore{Blockstore: mem}
	n := New(hs)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	k := mkBlocks("found-shared-closed", 1)[0]
	u := mustSub(t, n, 1)
	s := mustSub(t, n, 2)
	require.NoError(t, u.Subscribe(ctx, k.Cid()))
	require.NoError(t, mem.PutMany(ctx, []blocks.Block{k}))
	hs.onGet = func(cid.Cid) error { s.Remove(); return nil }
	require.ErrorIs(t, s.Subscribe(ctx, k.Cid()), ErrClosed)
	hs.onGet = nil
	require.True(t, u.mu.TryLock(), "u's lock was left held")
	u.mu.Unlock()
	require.Equal(t, []cid.Cid{k.Cid()}, u.AppendWanted(nil, []cid.Cid{k.Cid()}))
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{k}}))
	require.Equal(t, k.Cid(), recv(t, u).Blocks[0].Cid())
}

// holdForAMoment locks s as its drain goroutine or a read would, for a
// moment, and returns the function that unlocks it (once; also at cleanup).
func holdForAMoment(t *testing.T, s *Subscription) (unlock func()) {
	s.mu.Lock()
	var once sync.Once
	unlock = func() { once.Do(s.mu.Unlock) }
	t.Cleanup(unlock)
	return unlock
}

// requireOrderAfterRead checks the two one-block messages s received: those
// of an operation O, which waited for another target's lock while a read on
// s saw O done (done) or not, and of the operation called after that read,
// whose keys are opKey and nextKey. If the read saw O done, O came first; but
// the read must not have seen it done, since a want ends only with its
// message queued, so nextKey comes first.
func requireOrderAfterRead(t *testing.T, s *Subscription, done bool, opKey, nextKey cid.Cid) {
	t.Helper()
	first, second := recv(t, s), recv(t, s)
	require.Len(t, first.Blocks, 1)
	require.Len(t, second.Blocks, 1)
	if done {
		require.Equal(t, opKey, first.Blocks[0].Cid(), "the operation took effect for s before the next one was called, yet s got the next one's block first")
	}
	require.False(t, done, "s's wants showed the operation done while its message was not queued")
	require.Equal(t, nextKey, first.Blocks[0].Cid(), "the operation had not taken effect for s when the next one was called: that one comes first")
}

// A message is its receiver's to keep and modify (ResponseMessage): an
// append to one of its slices writes into no other subscription's message,
// though the messages of one operation are cut from one array, with the
// capacity of each capped. Two subscriptions get each message, one key in a
// one-block Publish (one message per target, cut by buildOne) and three in a
// Publish of blocks and HAVEs (carved per target); each appends to every
// slice of its message as it gets it, and what every message held must be
// intact once the Publish returns.
func TestMessage_AppendWritesIntoNoOtherMessage(t *testing.T) {
	blks := mkBlocks("msg-append", 4)
	k := keysOf(blks)
	for _, tc := range []struct {
		name string
		keys []cid.Cid
		msg  ResponseMessage
	}{
		{"one block", k[:1], ResponseMessage{From: "p", Blocks: blks[:1]}},
		{"blocks and haves", k[:3], ResponseMessage{From: "p", Blocks: blks[:2], Haves: k[2:3]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(nil)
			t.Cleanup(func() { require.NoError(t, n.Close()) })
			var got []ResponseMessage // as received, before the appends
			scribble := func(m ResponseMessage) {
				got = append(got, m)
				_ = append(m.Blocks, blks[3])
				_ = append(m.Haves, k[3])
				_ = append(m.DontHaves, k[3])
			}
			for range 2 {
				require.NoError(t, mustRequest(t, n, scribble).Subscribe(ctx, tc.keys...))
			}
			require.NoError(t, n.Publish(ctx, tc.msg))
			require.Equal(t, []ResponseMessage{tc.msg, tc.msg}, got)
		})
	}
}
