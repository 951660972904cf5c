package notifier

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Release and ReleaseAll: what they return, for both kinds of subscription.

// For a normal subscription, Release returns the keys nobody wants any more,
// each once: exactly what goes to the cancel function. Keys it does not want,
// repeated keys, keys already released and keys already delivered add
// nothing; a key another subscription of either kind still wants is not
// reported.
func TestRelease_NormalReturnsKeysNobodyWants(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("release-normal", 6)
	k := keysOf(b)
	s, s2, in := mustSub(t, n, 1), mustSub(t, n, 2), mustInterest(t, n, 3)
	// k0: s alone; k1: s and s2; k2: s and in; k3: s, delivered; k4: s alone; k5: nobody.
	require.NoError(t, s.Subscribe(ctx, k[:5]...))
	require.NoError(t, s2.Subscribe(ctx, k[1]))
	require.NoError(t, in.Subscribe(ctx, k[2]))
	require.NoError(t, publishFromPeer(n, b[3]))
	recv(t, s)
	require.Equal(t, []cid.Cid{k[3]}, cancels.take())

	require.Empty(t, s.Release())
	require.Empty(t, s.Release(k[5]), "a key s does not want")
	require.Empty(t, cancels.take())

	got := s.Release(k[0], k[0], k[1], k[2], k[3], k[5], k[0])
	require.Equal(t, []cid.Cid{k[0]}, got, "only the key nobody else wants, once")
	require.Equal(t, []cid.Cid{k[0]}, cancels.take(), "the same keys as the cancel function")
	for _, key := range k[:4] {
		require.False(t, s.Wants(key))
	}
	require.True(t, s2.Wants(k[1]))
	require.True(t, in.Wants(k[2]))
	require.Empty(t, s.Release(k[0], k[1], k[2]), "already released")
	require.Empty(t, cancels.take())

	require.Equal(t, []cid.Cid{k[1]}, s2.Release(k[1]))
	require.Equal(t, []cid.Cid{k[1]}, cancels.take())
	require.Equal(t, []cid.Cid{k[2]}, in.Release(k[2]))
	require.Equal(t, []cid.Cid{k[2]}, cancels.take())
	require.Equal(t, []cid.Cid{k[4]}, s.Release(k[4]))
	require.Equal(t, []cid.Cid{k[4]}, cancels.take())
	require.Equal(t, Stats{Subscriptions: 3}, n.Stats())
}

// For an interest subscription, Release returns the keys no interest
// subscription wants any more, whatever normal subscriptions still want;
// the cancel function still hears only of keys nobody wants.
func TestRelease_InterestReturnsKeysNoInterestHolds(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("release-interest", 6)
	k := keysOf(b)
	in1, in2, s := mustInterest(t, n, 1), mustInterest(t, n, 2), mustSub(t, n, 3)
	// k0: in1 alone; k1: in1 and in2; k2: in1 and s; k3: in1, delivered to s;
	// k4: in1 and s, s's want ended by Unsubscribe; k5: nobody.
	require.NoError(t, in1.Subscribe(ctx, k[:5]...))
	require.NoError(t, in2.Subscribe(ctx, k[1]))
	require.NoError(t, s.Subscribe(ctx, k[2], k[3], k[4]))
	require.NoError(t, publishFromPeer(n, b[3]))
	recv(t, s)
	s.Unsubscribe(k[4])
	require.Empty(t, cancels.take())

	require.Empty(t, in1.Release(k[5]))
	got := in1.Release(k[0], k[1], k[2], k[2], k[3], k[4], k[5], k[0])
	require.Equal(t, sorted(k[0], k[2], k[3], k[4]), sortedOrNil(got))
	require.Equal(t, sorted(k[0], k[3], k[4]), cancels.take(), "s still wants k2, in2 k1")
	require.False(t, n.Interested(k[2]))
	require.True(t, n.Wanted(k[2]))
	require.True(t, n.Interested(k[1]))
	require.Empty(t, in1.Release(k[:5]...), "already released")

	require.Equal(t, []cid.Cid{k[1]}, in2.Release(k[1]))
	require.Equal(t, []cid.Cid{k[1]}, cancels.take())
	require.Equal(t, []cid.Cid{k[2]}, s.Release(k[2]))
	require.Equal(t, []cid.Cid{k[2]}, cancels.take())
	require.Equal(t, Stats{Subscriptions: 3}, n.Stats())
}

// ReleaseAll is Remove returning the keys Release would: a second call, or one
// after Remove, returns nil.
func TestReleaseAll_ReturnsKeysPerKind(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("release-all", 5)
	k := keysOf(b)
	s, s2 := mustSub(t, n, 1), mustSub(t, n, 2)
	in, in2 := mustInterest(t, n, 3), mustInterest(t, n, 4)
	// s: k0 alone, k1 with in, k2 with s2, k3 delivered.
	// in: k1 with s, k2 with s2, k3 (delivered to s), k4 with in2.
	require.NoError(t, s.Subscribe(ctx, k[:4]...))
	require.NoError(t, s2.Subscribe(ctx, k[2]))
	require.NoError(t, in.Subscribe(ctx, k[1:]...))
	require.NoError(t, in2.Subscribe(ctx, k[4]))
	require.NoError(t, publishFromPeer(n, b[3]))
	recv(t, s)
	require.Empty(t, cancels.take())

	require.Equal(t, []cid.Cid{k[0]}, s.ReleaseAll())
	require.Equal(t, []cid.Cid{k[0]}, cancels.take())
	closedNow(t, s)
	require.NoError(t, s.Err())
	require.Nil(t, s.ReleaseAll(), "a second call")
	require.Nil(t, s.Release(k...), "after ReleaseAll")
	mustSub(t, n, 1) // the ID is free again

	require.Equal(t, sorted(k[1], k[2], k[3]), sortedOrNil(in.ReleaseAll()), "no interest in k1..k3 any more; in2 holds k4")
	require.Equal(t, sorted(k[1], k[3]), cancels.take(), "s2 still wants k2")
	closedNow(t, in)
	require.Nil(t, in.ReleaseAll())

	in2.Remove()
	require.Nil(t, in2.ReleaseAll(), "after Remove")
	require.Equal(t, []cid.Cid{k[4]}, cancels.take())
	require.Equal(t, []cid.Cid{k[2]}, s2.ReleaseAll())
	require.Equal(t, []cid.Cid{k[2]}, cancels.take())
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// After Close every subscription has ended and its keys went to the cancel
// function: Release and ReleaseAll return nil.
func TestRelease_AfterCloseReturnsNil(t *testing.T) {
	cancels := &cancelLog{}
	n := New(memStore(), WithCancelFunc(cancels.record))
	b := mkBlocks("release-closed", 3)
	k := keysOf(b)
	s, in, r := mustSub(t, n, 1), mustInterest(t, n, 2), mustRequest(t, n, nil)
	require.NoError(t, s.Subscribe(ctx, k[0], k[1]))
	require.NoError(t, in.Subscribe(ctx, k[1], k[2]))
	require.NoError(t, r.Subscribe(ctx, k[2]))
	require.NoError(t, n.Close())
	require.Equal(t, sorted(k...), cancels.take())
	for _, sub := range []*Subscription{s, in, r} {
		require.Nil(t, sub.Release(k...))
		require.Nil(t, sub.ReleaseAll())
		require.ErrorIs(t, sub.Err(), ErrClosed)
		closedNow(t, sub)
	}
	require.Empty(t, cancels.take())
	requireIndexEmpty(t, n)
}

// Of concurrent Releases of one key by the two subscriptions that hold it,
// exactly one reports it, for both kinds, by Release and by ReleaseAll. The
// order is left to the scheduler; every round must end with one report.
// Deciding after the shard locks are released would let both report.
func TestRelease_ConcurrentReportExactlyOnce(t *testing.T) {
	kinds := map[string]func(n *Notifier, id uint64) (*Subscription, error){
		"interest": (*Notifier).NewInterest,
		"normal":   (*Notifier).NewSubscription,
	}
	for name, mk := range kinds {
		for _, all := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/all=%v", name, all), func(t *testing.T) {
				n, cancels := newWithCancels(t, nil)
				b := mkBlocks("release-race-"+name, 1)[0]
				for round := range 500 {
					subs := make([]*Subscription, 2)
					for i := range subs {
						s, err := mk(n, uint64(i))
						require.NoError(t, err)
						require.NoError(t, s.Subscribe(ctx, b.Cid()))
						subs[i] = s
					}
					reports := releaseTogether(subs, all, b.Cid())
					require.Equal(t, 1, reports, "round %d", round)
					require.Equal(t, []cid.Cid{b.Cid()}, cancels.take(), "round %d", round)
					for _, s := range subs {
						s.Remove()
					}
					require.Equal(t, Stats{}, n.Stats())
				}
			})
		}
	}
}

// releaseTogether releases k from every subscription at once, by Release or
// by ReleaseAll, and returns how many of them reported it.
func releaseTogether(subs []*Subscription, all bool, k cid.Cid) int {
	start := make(chan struct{})
	var mu sync.Mutex
	reports := 0
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() {
			<-start
			var got []cid.Cid
			if all {
				got = s.ReleaseAll()
			} else {
				got = s.Release(k)
			}
			mu.Lock()
			reports += len(got)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return reports
}

// A Release of a key whose block was delivered to the subscription reports
// nothing, even though the key has a new want of another subscription by
// then.
func TestRelease_DeliveredKeyReportsNothing(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("release-delivered", 1)[0]
	s, o := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, s.Subscribe(ctx, b.Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}}))
	recv(t, s)
	require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
	in := mustInterest(t, n, 3)
	require.NoError(t, in.Subscribe(ctx, b.Cid()))
	require.NoError(t, o.Subscribe(ctx, b.Cid()))
	recv(t, o) // stored by the Publish: o's want ends inside its Subscribe
	require.Empty(t, s.Release(b.Cid()))
	require.Empty(t, o.Release(b.Cid()))
	require.Empty(t, s.ReleaseAll())
	require.True(t, in.Wants(b.Cid()))
	require.Empty(t, cancels.take())
	require.Equal(t, []cid.Cid{b.Cid()}, in.ReleaseAll())
	require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
}

// What Release and ReleaseAll return is decided in the critical section that
// ends the wants, not after: A lets go of k and of k2, whose cancel function
// call is held open; meanwhile B, in k's shard, which A no longer holds,
// releases k's last interest. B reports k; A, still in its call, must not
// report k too. Deciding A's report after its locks were released would see
// k unwanted and report it twice.
func TestRelease_ReportDecidedUnderShardLocks(t *testing.T) {
	ends := map[string]func(a *Subscription, keys ...cid.Cid) []cid.Cid{
		"Release":    (*Subscription).Release,
		"ReleaseAll": func(a *Subscription, _ ...cid.Cid) []cid.Cid { return a.ReleaseAll() },
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			k2 := mkBlocks("decided-slow", 1)[0].Cid()
			n, cancels, entered, letGo := newHeldInCancelOf(t, k2)
			k := keysInOtherShards(n, k2, "decided", 1)[0].Cid()
			a, b := mustInterest(t, n, 1), mustInterest(t, n, 2)
			require.NoError(t, a.Subscribe(ctx, k, k2))
			require.NoError(t, b.Subscribe(ctx, k))

			var gotA []cid.Cid
			returnedA := make(chan struct{})
			go func() {
				defer close(returnedA)
				gotA = end(a, k, k2)
			}()
			done(t, entered, "A's cancel of k2")
			var gotB []cid.Cid
			returnedB := make(chan struct{})
			go func() {
				defer close(returnedB)
				gotB = b.Release(k)
			}()
			done(t, returnedB, "B's Release in another shard, while A's cancel function runs")
			letGo()
			done(t, returnedA, "A's "+name)

			require.Equal(t, []cid.Cid{k}, gotB)
			require.Equal(t, []cid.Cid{k2}, gotA, "k was B's to report")
			require.Equal(t, sorted(k, k2), cancels.take())
			require.Zero(t, n.Stats().Keys)
			require.Zero(t, n.Stats().Wants)
		})
	}
}

// newHeldInCancelOf returns a Notifier on eight shards whose cancel
// function records the keys it gets in cancels and, in a call with k2,
// closes entered and waits until letGo is called: at the latest as the test
// ends, before the Notifier is closed (Close waits for that call).
func newHeldInCancelOf(t *testing.T, k2 cid.Cid) (n *Notifier, cancels *cancelLog, entered chan struct{}, letGo func()) {
	t.Helper()
	entered, proceed := make(chan struct{}), make(chan struct{})
	letGo = sync.OnceFunc(func() { close(proceed) })
	cancels = &cancelLog{}
	n = New(nil, WithShards(8), WithCancelFunc(func(keys []cid.Cid) {
		cancels.record(keys)
		if slices.Contains(keys, k2) {
			close(entered)
			<-proceed
		}
	}))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	t.Cleanup(letGo) // before Close, which waits for A's cancel function
	return n, cancels, entered, letGo
}
