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
				const m = 9
				type member struct {
					s    *Subscription
					kind int
					end  int
				}
				var ms []member
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
					ms = append(ms, member{s: s, kind: kind, end: rng.IntN(4)})
				}
				var mu sync.Mutex
				normalReports, interestReports := 0, 0
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
						c := 0
						for _, g := range got {
							if g == k {
								c++
							}
						}
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
				got := cancels.take()
				nk := 0
				for _, c := range got {
					if c == k {
						nk++
					}
				}
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
	var bad []string
	var badMu sync.Mutex
	reported := 0
	n = New(bs, WithShards(2), WithBufferSize(1<<12), WithCancelFunc(func(keys []cid.Cid) {
		for _, k := range keys {
			x := &n.shards[n.shardOf(k)].idx // its shard lock is held by the caller
			badMu.Lock()
			reported++
			if x.wanted(k) {
				bad = append(bad, fmt.Sprintf("%s reported while wanted", k))
			}
			badMu.Unlock()
		}
	}))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	blks := mkBlocks("cancel-unwanted", 8)
	keys := keysOf(blks)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for i := 0; i < 400; i++ {
				var s *Subscription
				var err error
				switch rng.IntN(4) {
				case 0:
					s, err = n.NewSubscription(uint64(g*1000 + i))
				case 1:
					s, err = n.NewSubscriptionFunc(uint64(g*1000+i), nil)
				case 2:
					s, err = n.NewInterest(uint64(g*1000 + i))
				case 3:
					s, err = n.NewRequest(nil)
				}
				if !assertNoErr(t, err) {
					return
				}
				for range 1 + rng.IntN(4) {
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
				if rng.IntN(2) == 0 {
					s.Remove()
				} else {
					s.ReleaseAll()
				}
			}
		})
	}
	wg.Wait()
	badMu.Lock()
	require.Empty(t, bad)
	require.Positive(t, reported)
	badMu.Unlock()
	requireIndexEmpty(t, n)
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
	mk := func(base uint64, interest bool) []*Subscription {
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
	normal, interests := mk(1, false), mk(100000, true)
	// bigSubs+1 ends one by one, from the front, so that each scan is long.
	for i := 0; i <= bigSubs; i++ {
		require.Empty(t, normal[i].Release(k))
		require.Empty(t, interests[i].Release(k))
	}
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
	// Some join again, then all the rest end at once.
	for i := 0; i < 10; i++ {
		require.NoError(t, normal[i].Subscribe(ctx, k))
		require.NoError(t, interests[i].Subscribe(ctx, k))
	}
	live := append(append(append(normal[:10:10], interests[:10]...), normal[bigSubs+1:]...), interests[bigSubs+1:]...)
	var mu sync.Mutex
	normalReports, interestReports := 0, 0
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
	require.Equal(t, 1, interestReports, "the last interest reports k")
	require.LessOrEqual(t, normalReports, 1)
	require.Equal(t, []cid.Cid{k}, cancels.take())
	for _, s := range append(normal, interests...) {
		s.Remove()
	}
	requireIndexEmpty(t, n)
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
