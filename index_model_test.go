package notifier

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Phased rounds under concurrency: in each round, subscriptions of the
// three kinds want one key k (and a key of their own, so that their closes
// take several shards); then, all at once, a remote Publish of k and every
// way a want ends (Unsubscribe, Release, Remove, ReleaseAll). Each round
// must report k to the cancel function exactly once (G5), the interest
// subscriptions' Releases must report k exactly once between them, the
// others' at most once, and the index must end empty (G8).
func TestIndex_ConcurrentEndsReportOnce(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			n, cancels := newWithCancels(t, memStore(), WithShards(shards), WithBufferSize(4))
			b := mkBlocks(fmt.Sprintf("phased-%d", shards), 1)[0]
			own := mkBlocks(fmt.Sprintf("phased-own-%d", shards), 16)
			k := b.Cid()
			rng := rand.New(rand.NewPCG(uint64(shards), 3))
			for round := range 300 {
				ms := phasedMembers(t, n, k, own, rng)
				normalReports, interestReports := endPhasedAtOnce(t, n, b, own, ms)
				nk := countOf(cancels.take(), k)
				require.Equal(t, 1, nk, "round %d: cancels of k", round)
				require.LessOrEqual(t, normalReports, 1, "round %d", round)
				for _, mb := range ms {
					mb.s.Remove()
				}
				cancels.take()
				requireIndexEmpty(t, n)
				require.LessOrEqual(t, interestReports, 1, "round %d", round)
			}
		})
	}
}

// phasedMember is a subscription of a phased round: its kind (0 channel,
// 1 delivery function, 2 interest) and how its want of k ends (0
// Unsubscribe, 1 Release, 2 Remove, 3 ReleaseAll).
type phasedMember struct {
	s    *Subscription
	kind int
	end  int
}

// phasedMembers makes the 9 subscriptions of a round, of the three kinds in
// turn, each wanting k and its own key, with an end drawn from rng.
func phasedMembers(t *testing.T, n *Notifier, k cid.Cid, own []blocks.Block, rng *rand.Rand) []phasedMember {
	t.Helper()
	const m = 9
	var ms []phasedMember
	for i := range m {
		kind := i % 3
		var s *Subscription
		var err error
		switch kind {
		case 0:
			s, err = n.NewSubscription(uint64(i + 1))
		case 1:
			s, err = n.NewSubscriptionFunc(uint64(i+1), nil)
		case 2:
			s, err = n.NewInterest(uint64(i + 1))
		}
		require.NoError(t, err)
		require.NoError(t, s.Subscribe(ctx, k, own[i].Cid()))
		ms = append(ms, phasedMember{s: s, kind: kind, end: rng.IntN(4)})
	}
	return ms
}

// endPhasedAtOnce starts, all at once, a remote Publish of b and each
// member's end, waits for them, and returns how many times the Releases
// reported b's key: of the channel and function subscriptions, and of the
// interests.
func endPhasedAtOnce(t *testing.T, n *Notifier, b blocks.Block, own []blocks.Block, ms []phasedMember) (normalReports, interestReports int) {
	t.Helper()
	k := b.Cid()
	var mu sync.Mutex
	start := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		<-start
		assertNoErr(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}))
	})
	for i, mb := range ms {
		wg.Go(func() {
			<-start
			var got []cid.Cid
			switch mb.end {
			case 0:
				mb.s.Unsubscribe(k)
			case 1:
				got = mb.s.Release(k, own[i].Cid())
			case 2:
				mb.s.Remove()
			case 3:
				got = mb.s.ReleaseAll()
			}
			c := countOf(got, k)
			mu.Lock()
			if mb.kind == 2 {
				interestReports += c
			} else {
				normalReports += c
			}
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return normalReports, interestReports
}

// countOf returns how many times k occurs in keys.
func countOf(keys []cid.Cid, k cid.Cid) int {
	c := 0
	for _, g := range keys {
		if g == k {
			c++
		}
	}
	return c
}

// Under concurrency, with every kind of subscription and every way a want
// begins and ends, the cancel function is only ever called for keys that
// nobody wants at that instant: it runs under the shard locks of the keys
// it reports (keep), so the index is read there directly. At the end, with
// every subscription removed, the index is empty (G8).
func TestIndex_CancelOnlyForUnwantedKeys(t *testing.T) {
	mem := memStore()
	bs := &hookStore{
		Blockstore: mem,
		onGet:      func(cid.Cid) error { runtime.Gosched(); return nil },
		onPutMany:  func([]blocks.Block) error { runtime.Gosched(); return nil },
	}
	var n *Notifier
	var u unwantedCancels
	n = New(bs, WithShards(2), WithBufferSize(1<<12), WithCancelFunc(func(keys []cid.Cid) { u.check(n, keys) }))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	blks := mkBlocks("cancel-unwanted", 8)
	keys := keysOf(blks)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for i := 0; i < 400; i++ {
				if !walkOneSubscription(t, n, mem, rng, blks, keys, uint64(g*1000+i)) {
					return
				}
			}
		})
	}
	wg.Wait()
	u.mu.Lock()
	require.Empty(t, u.bad)
	require.Positive(t, u.reported)
	u.mu.Unlock()
	requireIndexEmpty(t, n)
}

// unwantedCancels checks, from inside the cancel function, that no key it
// reports is wanted, and counts the keys it reports.
type unwantedCancels struct {
	mu       sync.Mutex // guards bad and reported
	bad      []string
	reported int
}

// check is the cancel function of n: keys' shard locks are held by its
// caller.
func (u *unwantedCancels) check(n *Notifier, keys []cid.Cid) {
	for _, k := range keys {
		x := &n.shards[n.shardOf(k)].idx // its shard lock is held by the caller
		u.mu.Lock()
		u.reported++
		if x.wanted(k) {
			u.bad = append(u.bad, fmt.Sprintf("%s reported while wanted", k))
		}
		u.mu.Unlock()
	}
}

// walkOneSubscription makes a subscription of a kind drawn from rng, with
// id for those that take one, walks it through 1 to 4 random operations
// (randomIndexOp), and ends it by Remove or ReleaseAll. It returns false,
// having reported the error, if the subscription could not be made.
func walkOneSubscription(t *testing.T, n *Notifier, mem Blockstore, rng *rand.Rand, blks []blocks.Block, keys []cid.Cid, id uint64) bool {
	t.Helper()
	var s *Subscription
	var err error
	switch rng.IntN(4) {
	case 0:
		s, err = n.NewSubscription(id)
	case 1:
		s, err = n.NewSubscriptionFunc(id, nil)
	case 2:
		s, err = n.NewInterest(id)
	case 3:
		s, err = n.NewRequest(nil)
	}
	if !assertNoErr(t, err) {
		return false
	}
	for range 1 + rng.IntN(4) {
		randomIndexOp(n, mem, s, rng, blks, keys)
	}
	if rng.IntN(2) == 0 {
		s.Remove()
	} else {
		s.ReleaseAll()
	}
	return true
}

// randomIndexOp does one operation drawn from rng on neighbouring keys: s
// wants, unwants or releases some, n publishes blocks and HAVEs (remote or
// local), or the store loses a block; then a channel subscription's
// messages are read.
func randomIndexOp(n *Notifier, mem Blockstore, s *Subscription, rng *rand.Rand, blks []blocks.Block, keys []cid.Cid) {
	lo := rng.IntN(len(keys) - 2)
	switch rng.IntN(6) {
	case 0, 1:
		_ = s.Subscribe(ctx, keys[lo:lo+1+rng.IntN(2)]...)
	case 2:
		from := ""
		if rng.IntN(2) == 0 {
			from = "peer"
		}
		_ = n.Publish(ctx, ResponseMessage{From: from, Blocks: blks[lo : lo+2], Haves: keys[lo+1 : lo+3]})
	case 3:
		s.Unsubscribe(keys[lo : lo+2]...)
	case 4:
		s.Release(keys[lo])
	case 5:
		_ = mem.(interface {
			DeleteBlock(context.Context, cid.Cid) error
		}).DeleteBlock(ctx, keys[lo])
	}
	if s.fn == nil {
		for len(s.Messages()) > 0 {
			<-s.Messages()
		}
	}
}

func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// Positions of many subscribers of one key (shardIndex.big), at the default
// thresholds: once more than bigSubs ends have scanned the list, the
// positions are kept, stay exact through swaps, joins and concurrent ends of
// both kinds, and go with the interest. Each kind's interest reports the key
// once between its Releases, the cancel function once, and the index ends
// empty.
func TestIndex_PositionsStayExactUnderConcurrentEnds(t *testing.T) {
	n, cancels := newWithCancels(t, nil, WithShards(1))
	k := mkBlocks("positions", 1)[0].Cid()
	subs := 2*bigSubs + 100
	normal, interests := subscribersOf(t, n, k, 1, false, subs), subscribersOf(t, n, k, 100000, true, subs)
	// bigSubs+1 ends one by one, from the front, so that each scan is long.
	for i := 0; i <= bigSubs; i++ {
		require.Empty(t, normal[i].Release(k))
		require.Empty(t, interests[i].Release(k))
	}
	requireExactPositions(t, n, k)
	// Some join again, then all the rest end at once.
	for i := 0; i < 10; i++ {
		require.NoError(t, normal[i].Subscribe(ctx, k))
		require.NoError(t, interests[i].Subscribe(ctx, k))
	}
	live := append(append(append(normal[:10:10], interests[:10]...), normal[bigSubs+1:]...), interests[bigSubs+1:]...)
	normalReports, interestReports := releaseAtOnce(live, k)
	require.Equal(t, 1, interestReports, "the last interest reports k")
	require.LessOrEqual(t, normalReports, 1)
	require.Equal(t, []cid.Cid{k}, cancels.take())
	for _, s := range append(normal, interests...) {
		s.Remove()
	}
	requireIndexEmpty(t, n)
}

// subscribersOf returns subs new subscriptions of n, with ids from base,
// interests or with a delivery function, each wanting k.
func subscribersOf(t *testing.T, n *Notifier, k cid.Cid, base uint64, interest bool, subs int) []*Subscription {
	t.Helper()
	out := make([]*Subscription, subs)
	for i := range out {
		var err error
		if interest {
			out[i], err = n.NewInterest(base + uint64(i))
		} else {
			out[i], err = n.NewSubscriptionFunc(base+uint64(i), nil)
		}
		require.NoError(t, err)
		require.NoError(t, out[i].Subscribe(ctx, k))
	}
	return out
}

// requireExactPositions checks, under the lock of n's one shard, that
// positions are kept for both interests of k and that each is exact.
func requireExactPositions(t *testing.T, n *Notifier, k cid.Cid) {
	t.Helper()
	x := &n.shards[0].idx
	n.shards[0].mu.Lock()
	kept := len(x.big)
	for _, e := range []*interest{x.wants[k], x.held[k]} {
		if p := x.big[e]; p != nil {
			require.Len(t, p.at, len(e.subs))
			for i, s := range e.subs {
				require.Equal(t, i, p.at[s], "position of subscriber %d", i)
			}
		}
	}
	n.shards[0].mu.Unlock()
	require.Equal(t, 2, kept, "positions kept for both kinds")
}

// releaseAtOnce ends every want of k of live at once (interests by Release,
// the others by Release or ReleaseAll by the parity of their id), waits for
// them, and returns how many times k was reported to the others and to the
// interests.
func releaseAtOnce(live []*Subscription, k cid.Cid) (normalReports, interestReports int) {
	var mu sync.Mutex
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range live {
		wg.Go(func() {
			<-start
			var got []cid.Cid
			if s.keeps {
				got = s.Release(k)
			} else if s.ID()%2 == 0 {
				got = s.Release(k)
			} else {
				got = s.ReleaseAll()
			}
			mu.Lock()
			if s.keeps {
				interestReports += len(got)
			} else {
				normalReports += len(got)
			}
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return normalReports, interestReports
}

// An Unsubscribe of a key whose block was delivered deletes the stale entry
// and takes it off the stale count (commitRelease): were the count left
// as it was, the next delivery would take the map for all stale and clear
// it (compact) while it still holds a live want, which Remove would then
// never end (G5, G8). Mutation g8-release-keeps-stale-count.
func TestRelease_UnsubscribedStaleEntryLeavesTheCount(t *testing.T) {
	n, cancels := newWithCancels(t, nil)
	b := mkBlocks("unsub-stale", 3)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
	recv(t, s)
	s.Unsubscribe(b[0].Cid()) // its entry is stale: no cancel, and it leaves the map
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:2]}))
	recv(t, s)
	require.Equal(t, sorted(keysOf(b[:2])...), cancels.take())
	require.Equal(t, keysOf(b[2:]), s.AppendWanted(nil, keysOf(b)))
	live, ended, stale := countEntries(s)
	require.Equal(t, [3]int{1, 1, 1}, [3]int{live, ended, stale}, "entries live, ended, and counted stale")
	s.Remove()
	require.Equal(t, keysOf(b[2:]), cancels.take(), "Remove ends the live want")
	requireIndexEmpty(t, n)
}
