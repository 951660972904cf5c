package notifier

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/shrink"
)

// Tests of how a subscription keeps its keys: repeated keys in one Subscribe,
// and the stale entries that delivered blocks leave behind (Subscription.keys).

// G2: a key repeated in one Subscribe is checked and delivered once, whether
// its block is stored or not, in short calls (scanned) and long ones (o.seen).
func TestSubscribe_RepeatedKeysCountOnce(t *testing.T) {
	for _, size := range []int{3, 40} {
		bs := memStore()
		n, cancels := newWithCancels(t, bs)
		b := mkBlocks("repeat", size)
		stored := b[:size/2]
		require.NoError(t, bs.PutMany(ctx, stored))
		keys := keysOf(b)
		keys = append(keys, keys...)
		slices.Reverse(keys[size:]) // repeats far from and next to their first occurrence
		keys = append(keys, keys[0], keys[size-1])
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, keys...))
		require.Equal(t, ResponseMessage{Blocks: stored}, recv(t, s), "size %d", size)
		none(t, s)
		missing := size - len(stored)
		require.Equal(t, Stats{Subscriptions: 1, Keys: missing, Wants: missing}, n.Stats(), "size %d", size)
		s.Remove()
		require.Equal(t, sorted(keysOf(b[len(stored):])...), cancels.take(), "size %d", size)
	}
}

// A delivered block ends the want of every subscriber without touching their
// keys maps; the stale entries are treated as absent: the key can be wanted
// again, Remove reports no cancel for it, and the ended interest holds no
// subscription.
func TestDeliveredWant_IsGoneEverywhere(t *testing.T) {
	bs := memStore()
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("stale", 2)
	s, o := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	require.NoError(t, o.Subscribe(ctx, b[0].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
	require.Equal(t, ResponseMessage{From: "p", Blocks: b[:1]}, recv(t, s))
	require.Equal(t, ResponseMessage{From: "p", Blocks: b[:1]}, recv(t, o))
	require.Equal(t, keysOf(b[:1]), cancels.take())
	require.Equal(t, Stats{Subscriptions: 2, Keys: 1, Wants: 1}, n.Stats())

	s.mu.Lock()
	e := s.keys[b[0].Cid()]
	s.mu.Unlock()
	require.NotNil(t, e, "the entry stays, stale")
	require.True(t, e.ended.Load())
	require.Nil(t, e.subs, "an ended interest lets go of its subscribers")
	require.Nil(t, e.first[0], "an ended interest lets go of its subscribers")

	// Wanted again: a new want, not the stale one. The block is stored now,
	// so the Subscribe delivers it at once.
	require.NoError(t, o.Subscribe(ctx, b[0].Cid()))
	require.Equal(t, ResponseMessage{Blocks: b[:1]}, recv(t, o))
	bs2 := mkBlocks("stale-again", 1)
	require.NoError(t, s.Subscribe(ctx, bs2[0].Cid()))
	require.Equal(t, Stats{Subscriptions: 2, Keys: 2, Wants: 2}, n.Stats())

	s.Remove()
	require.Equal(t, sorted(b[1].Cid(), bs2[0].Cid()), cancels.take(), "no cancel for the delivered key")
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// A subscription's stale entries are compacted by its next Subscribe once
// they outnumber its live ones, so a long-lived session does not grow without
// bound. A map of more than shrink.Floor entries is compacted by delivery
// too (accept): under -small-thresholds, this one.
func TestStaleKeys_Compacted(t *testing.T) {
	const delivered, live = 200, 10
	compacting := delivered+live > shrink.Floor
	n, _ := newWithCancels(t, nil)
	b := mkBlocks("compact", delivered+live)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	for _, blk := range b[:delivered] {
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{blk}}))
		recv(t, s)
	}
	s.mu.Lock()
	kept := len(s.keys)
	s.mu.Unlock()
	if compacting {
		require.Less(t, kept, delivered+live, "delivery compacts a map above shrink.Floor")
	} else {
		require.Equal(t, delivered+live, kept, "delivery leaves the entries of a small map in place")
	}

	extra := mkBlocks("compact-extra", 1)[0].Cid()
	require.NoError(t, s.Subscribe(ctx, extra))
	s.mu.Lock()
	got := slices.Collect(maps.Keys(s.keys))
	s.mu.Unlock()
	want := append(keysOf(b[delivered:]), extra)
	if compacting { // the last compaction may have left up to 64 stale entries (compact)
		require.Subset(t, got, want)
		require.LessOrEqual(t, len(got), len(want)+64)
	} else {
		require.Equal(t, sorted(want...), sorted(got...))
	}
	require.Equal(t, Stats{Subscriptions: 1, Keys: live + 1, Wants: live + 1}, n.Stats())
	require.Equal(t, want, s.AppendWanted(nil, append(keysOf(b), extra)))
}

// A delivery that ends a subscription's last want leaves no entry in its map,
// whatever its size, so an idle subscription that wants nothing keeps none of
// the interests its wants pointed to (accept). Until that last delivery every
// live want is there, also the keys wanted again after their blocks came,
// whose stale entries the new wants replaced; and the same keys wanted again
// after the map emptied, as W1 does every round, end the same way.
func TestStaleKeys_LastDeliveryEmptiesTheMap(t *testing.T) {
	for _, size := range []int{1, 64, 65, 1000, shrink.Floor + 1, 3000} {
		for _, per := range []int{1, 100, size} { // blocks per message
			if per > size {
				continue
			}
			blks, keys, n, subs := largeSubscriptions(t, fmt.Sprintf("last %d %d", size, per), size)
			again := min(10, size-1) // keys wanted again once their blocks came
			for round := range 2 {
				for _, s := range subs {
					require.NoError(t, s.Subscribe(ctx, keys...))
				}
				wants := deliverWantingFirstAgain(t, n, blks, keys, subs, per, again, round)
				for _, s := range subs {
					require.ElementsMatch(t, wants, s.AppendWanted(nil, keys), "size %d, per %d, round %d: the wants left after the blocks", size, per, round)
				}
				if len(wants) > 0 { // the keys wanted again
					require.Equal(t, keys[:again], wants)
					require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: blks[:again]}))
					recv(t, subs[0])
				}
				for j, s := range subs {
					live, ended, stale := countEntries(s)
					require.Equal(t, [3]int{0, 0, 0}, [3]int{live, ended, stale}, "size %d, per %d, round %d, subscription %d: entries live, ended, and counted stale", size, per, round, j)
				}
				require.Equal(t, Stats{Subscriptions: 2}, n.Stats())
			}
		}
	}
}

// deliverWantingFirstAgain publishes blks, whose keys subs all want, in messages
// of per blocks; halfway, subs want the first again keys again. It checks
// the wants left before every 16th message and the last, and returns the
// wants left after the last.
func deliverWantingFirstAgain(t *testing.T, n *Notifier, blks []blocks.Block, keys []cid.Cid, subs []*Subscription, per, again, round int) []cid.Cid {
	t.Helper()
	size := len(blks)
	wants := slices.Clone(keys)
	for i := 0; i < size; i += per {
		if i > 0 && i/per == (size/per)/2 { // halfway: the first keys again
			for _, s := range subs {
				require.NoError(t, s.Subscribe(ctx, keys[:again]...))
			}
			wants = append(keys[:again:again], wants...)
		}
		if i%(16*per) == 0 || i+per >= size { // every 16th message, and the last
			for _, s := range subs {
				require.ElementsMatch(t, wants, s.AppendWanted(nil, keys), "size %d, per %d, round %d: the wants left before block %d", size, per, round, i)
			}
		}
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: blks[i:min(i+per, size)]}))
		recv(t, subs[0])
		wants = slices.DeleteFunc(wants, func(k cid.Cid) bool { return slices.Contains(keys[i:min(i+per, size)], k) })
	}
	return wants
}

// A Subscribe whose blockstore check finds a block another subscription
// waits for (an interest of the index, which the hand-over ends) and one that
// nobody else wants (delivered without an entry in the index) makes one stale
// entry, not two: counted as two, the map of {a live want, one ended entry}
// would be taken for all stale and cleared, losing the live want (review).
func TestStaleKeys_MixedHitsCountOnlyEndedInterests(t *testing.T) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	n, _ := newWithCancels(t, bs)
	b := mkBlocks("mixed hits", 3)
	live, shared, own := b[0].Cid(), b[1].Cid(), b[2].Cid()
	s, other := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, s.Subscribe(ctx, live))
	require.NoError(t, other.Subscribe(ctx, shared))
	require.NoError(t, bs.PutMany(ctx, b[1:]))
	require.NoError(t, s.Subscribe(ctx, shared, own))
	require.ElementsMatch(t, b[1:], recv(t, s).Blocks)
	require.Equal(t, b[1:2], recv(t, other).Blocks)
	l, ended, stale := countEntries(s)
	require.Equal(t, [3]int{1, 1, 1}, [3]int{l, ended, stale}, "entries live, ended, and counted stale")
	require.Equal(t, []cid.Cid{live}, s.AppendWanted(nil, keysOf(b)))
	require.Equal(t, Stats{Subscriptions: 2, Keys: 1, Wants: 1}, n.Stats())
	s.Remove()
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// A Subscribe whose blockstore check finds only blocks that nobody else wants
// (handed over without an entry in s's map) compacts the map, as every
// Subscribe does, but a map of a live want and one stale entry is not all
// stale: the live want stays in it, and Remove ends it and reports its key
// (g8-compact-clears-one-live: a clear when all entries but one are stale
// lost it, and the index kept it after Remove).
func TestStaleKeys_OwnHitsNextToOneStaleEntryKeepTheLiveWant(t *testing.T) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("own hits", 4)
	live, gone := b[0].Cid(), b[1].Cid()
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, live, gone))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:2]}))
	require.Equal(t, b[1:2], recv(t, s).Blocks)
	require.Equal(t, []cid.Cid{gone}, cancels.take())
	l, ended, stale := countEntries(s)
	require.Equal(t, [3]int{1, 1, 1}, [3]int{l, ended, stale}, "entries live, ended, and counted stale")

	require.NoError(t, bs.PutMany(ctx, b[2:]))
	require.NoError(t, s.Subscribe(ctx, keysOf(b[2:])...))
	require.ElementsMatch(t, b[2:], recv(t, s).Blocks)
	require.Equal(t, []cid.Cid{live}, s.AppendWanted(nil, keysOf(b)))
	s.Remove()
	require.Equal(t, []cid.Cid{live}, cancels.take())
	require.Equal(t, Stats{}, n.Stats())
}

// Remove does not wait for the shards of keys whose blocks were delivered:
// those wants are over.
func TestRemove_IgnoresShardsOfDeliveredKeys(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, hs, WithShards(4))
	kA := blockInShard(n, "a", 0, true)
	kB := blockInShard(n, "b", 0, false)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, kA.Cid(), kB.Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{kA}}))
	recv(t, s)
	blockShard(t, n, hs, 0)
	removed := make(chan struct{})
	go func() { defer close(removed); s.Remove() }()
	done(t, removed, "Remove, with the shard of a delivered key held")
}

// G8: a subscription removed while its Subscribe is checking the blockstore
// (Remove does not wait for shards of keys the subscription does not want
// yet) gets none of that Subscribe's wants: Subscribe returns ErrClosed and
// the index stays empty.
func TestSubscribe_RacingRemoveRecordsNothing(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, hs)
	k := mkBlocks("racing-remove", 1)[0].Cid()
	inGet, release := make(chan struct{}), make(chan struct{})
	hs.onGet = func(c cid.Cid) error {
		close(inGet)
		<-release
		return nil
	}
	s := mustSub(t, n, 1)
	subscribed := make(chan error, 1)
	go func() { subscribed <- s.Subscribe(ctx, k) }()
	done(t, inGet, "Subscribe in Get")
	s.Remove()
	close(release)
	select {
	case err := <-subscribed:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(hang):
		t.Fatal("Subscribe hung")
	}
	require.Equal(t, Stats{}, n.Stats())
	require.Empty(t, cancels.take())
}

// Subscribing to a key already wanted changes nothing, whether the key's
// subscriber list is short (scanned) or long (answered from the keys map).
func TestSubscribe_AlreadyWantedIsNoOp(t *testing.T) {
	for _, subs := range []int{3, 12} {
		bs := memStore()
		n, cancels := newWithCancels(t, bs)
		b := mkBlocks("again", 2)
		all := make([]*Subscription, subs)
		for i := range all {
			all[i] = mustSub(t, n, uint64(i+1))
			require.NoError(t, all[i].Subscribe(ctx, b[0].Cid()))
		}
		for _, s := range all {
			require.NoError(t, s.Subscribe(ctx, b[0].Cid(), b[1].Cid(), b[0].Cid()))
		}
		require.Equal(t, Stats{Subscriptions: subs, Keys: 2, Wants: 2 * subs}, n.Stats(), "%d subscriptions", subs)
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
		for _, s := range all {
			require.Equal(t, ResponseMessage{From: "p", Blocks: b[:1]}, recv(t, s), "%d subscriptions", subs)
			none(t, s)
		}
		require.Equal(t, keysOf(b[:1]), cancels.take())
	}
}

// A key delivered to many subscriptions and then wanted by all of them again
// is a new want for each, also where the long-list check consults s.keys,
// whose entry for the key is stale.
func TestSubscribe_RewantAfterDeliveryAmongMany(t *testing.T) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	n, _ := newWithCancels(t, bs)
	b := mkBlocks("rewant-many", 1)
	const subs = 12
	all := make([]*Subscription, subs)
	for i := range all {
		all[i] = mustSub(t, n, uint64(i+1))
		require.NoError(t, all[i].Subscribe(ctx, b[0].Cid()))
	}
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b}))
	for _, s := range all {
		recv(t, s)
	}
	require.NoError(t, bs.DeleteBlock(ctx, b[0].Cid())) // so that the Subscribes below do not find it
	for _, s := range all {
		require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	}
	require.Equal(t, Stats{Subscriptions: subs, Keys: 1, Wants: subs}, n.Stats())
}

// An ended subscription's Subscribe is refused before the blockstore is
// consulted, so it fails with ErrClosed even while the blockstore fails.
// (Found by FuzzNotifierModel: testdata/fuzz/FuzzNotifierModel/358ef0d25fd5cd85.)
func TestSubscribe_AfterRemoveTouchesNothing(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, hs)
	gets := 0
	hs.onGet = func(cid.Cid) error { gets++; return errBoom }
	s := mustSub(t, n, 1)
	s.Remove()
	require.ErrorIs(t, s.Subscribe(ctx, mkBlocks("after-remove", 1)[0].Cid()), ErrClosed)
	require.Zero(t, gets, "the blockstore was consulted for an ended subscription")
	require.Equal(t, Stats{}, n.Stats())
}

// TestStaleKeys_DeliveryCompactionKeepsWants: a random walk of Subscribes,
// Unsubscribes and Publishes over 4,096 keys, by two subscriptions (one with
// a channel, one with a delivery function) whose maps of keys grow past
// shrink.Floor, so that delivery compacts them (accept) as often as the
// next Subscribe does. After every step each subscription wants exactly
// what a model says (AppendWanted, which reads its map, and Stats, which
// counts the index), its map holds a live entry for each of those keys,
// and stale counts exactly its other entries.
func TestStaleKeys_DeliveryCompactionKeepsWants(t *testing.T) {
	const universe, steps = 4096, 500
	blks, keys, n, subs := largeSubscriptions(t, "delivery compaction", universe)
	models := []map[int]bool{{}, {}}
	rng := rand.New(rand.NewPCG(36, 1))
	pick := func(most int) []int {
		ix := make([]int, 1+rng.IntN(most))
		for i := range ix {
			ix[i] = rng.IntN(universe)
		}
		return ix
	}
	compactions := 0
	for step := range steps {
		i := rng.IntN(len(subs))
		switch op := rng.IntN(10); {
		case op < 4: // Subscribe, mostly of many keys
			subscribeModeled(t, subs[i], keys, models[i], pick(1200))
		case op < 5:
			unsubscribeModeled(subs[i], keys, models[i], pick(300))
		default: // Publish a batch; the channel subscription reads what it gets
			compactions += publishModeled(t, n, blks, subs, models, pick(800))
		}
		requireWantsAsModeled(t, n, keys, subs, models, step)
	}
	t.Logf("%d deliveries compacted a map", compactions)
	require.Greater(t, compactions, 20, "deliveries that compacted a map")
}

// subscribeModeled makes s want the keys at ix, and its model too.
func subscribeModeled(t *testing.T, s *Subscription, keys []cid.Cid, model map[int]bool, ix []int) {
	t.Helper()
	ks := make([]cid.Cid, len(ix))
	for j, x := range ix {
		ks[j] = keys[x]
		model[x] = true
	}
	require.NoError(t, s.Subscribe(ctx, ks...))
}

// unsubscribeModeled ends s's wants of the keys at ix, and its model's.
func unsubscribeModeled(s *Subscription, keys []cid.Cid, model map[int]bool, ix []int) {
	ks := make([]cid.Cid, len(ix))
	for j, x := range ix {
		ks[j] = keys[x]
		delete(model, x)
	}
	s.Unsubscribe(ks...)
}

// publishModeled publishes the blocks at ix in one message, which ends
// every model's wants of them; subs[0], the channel subscription, reads it
// if it wanted one. It returns how many of subs' maps the delivery
// compacted (their stale count went down).
func publishModeled(t *testing.T, n *Notifier, blks []blocks.Block, subs []*Subscription, models []map[int]bool, ix []int) (compactions int) {
	t.Helper()
	ch, fn := subs[0], subs[1]
	msg := ResponseMessage{From: "p"}
	for _, x := range ix {
		msg.Blocks = append(msg.Blocks, blks[x])
	}
	before := []int{ch.stale, fn.stale} // read without s.mu: nothing runs beside this goroutine
	chWanted := false
	for _, x := range ix {
		chWanted = chWanted || models[0][x]
	}
	require.NoError(t, n.Publish(ctx, msg))
	if chWanted {
		recv(t, ch)
	}
	for _, m := range models {
		for _, x := range ix {
			delete(m, x)
		}
	}
	for j, s := range subs {
		if s.stale < before[j] {
			compactions++
		}
	}
	return compactions
}

// requireWantsAsModeled checks, after step, that each of subs wants what
// its model says, with a live entry for each of those keys and stale
// counting its other entries, and that the index counts those wants.
func requireWantsAsModeled(t *testing.T, n *Notifier, keys []cid.Cid, subs []*Subscription, models []map[int]bool, step int) {
	t.Helper()
	wants := 0
	for j, s := range subs {
		var want []cid.Cid
		for x, k := range keys {
			if models[j][x] {
				want = append(want, k)
			}
		}
		wants += len(want)
		require.Equal(t, want, s.AppendWanted(nil, keys), "step %d: subscription %d", step, j)
		live, ended, stale := countEntries(s)
		require.Equal(t, len(want), live, "step %d: subscription %d: live entries", step, j)
		require.Equal(t, ended, stale, "step %d: subscription %d: stale entries", step, j)
	}
	require.Equal(t, wants, n.Stats().Wants, "step %d", step)
}

// TestStaleKeys_DeliveryCompactionUnderStress: the same maps, compacted by
// delivery while other goroutines add and end wants of the same
// subscriptions and read them (AppendWanted, Wants). Once all have
// stopped, each subscription's map and stale count agree with each other,
// AppendWanted with the index, and Remove leaves the index empty. Bounded:
// a fixed number of operations per goroutine.
func TestStaleKeys_DeliveryCompactionUnderStress(t *testing.T) {
	const universe, rounds = 4096, 150
	blks, keys, n, subs := largeSubscriptions(t, "delivery compaction stress", universe)
	ch := subs[0]
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range ch.Messages() {
		}
	}()
	var wg sync.WaitGroup
	for w, s := range subs { // a wanter per subscription
		wg.Go(func() { wantAtRandom(t, s, keys, w, rounds) })
	}
	wg.Go(func() { publishAtRandom(t, n, blks, 2*rounds) }) // a publisher
	wg.Go(func() { readAtRandom(subs, keys, rounds) })      // a reader
	wg.Wait()
	requireMapsAgree(t, n, keys, subs)
	for _, s := range subs {
		s.Remove()
	}
	<-drained
	requireIndexEmpty(t, n)
}

// wantAtRandom is the wanter w of s: rounds times, it wants a run of keys
// or, one time in four, unwants the first quarter of the run.
func wantAtRandom(t *testing.T, s *Subscription, keys []cid.Cid, w, rounds int) {
	t.Helper()
	universe := len(keys)
	rng := rand.New(rand.NewPCG(uint64(w), 36))
	for range rounds {
		lo := rng.IntN(universe)
		ks := keys[lo:min(lo+1+rng.IntN(1500), universe)]
		if rng.IntN(4) == 0 {
			s.Unsubscribe(ks[:len(ks)/4]...)
		} else if err := s.Subscribe(ctx, ks...); err != nil {
			t.Errorf("subscription %d: %v", w, err)
			return
		}
	}
}

// publishAtRandom publishes runs of blks, remote, count times.
func publishAtRandom(t *testing.T, n *Notifier, blks []blocks.Block, count int) {
	t.Helper()
	universe := len(blks)
	rng := rand.New(rand.NewPCG(2, 36))
	for range count {
		lo := rng.IntN(universe)
		if err := n.Publish(ctx, ResponseMessage{From: "p", Blocks: blks[lo:min(lo+1+rng.IntN(800), universe)]}); err != nil {
			t.Errorf("publish: %v", err)
			return
		}
	}
}

// readAtRandom reads subs' wants of runs of keys, and of single keys,
// count times.
func readAtRandom(subs []*Subscription, keys []cid.Cid, count int) {
	universe := len(keys)
	rng := rand.New(rand.NewPCG(3, 36))
	for range count {
		s := subs[rng.IntN(len(subs))]
		lo := rng.IntN(universe)
		_ = s.AppendWanted(nil, keys[lo:min(lo+500, universe)])
		_ = s.Wants(keys[rng.IntN(universe)])
	}
}

// requireMapsAgree checks that each of subs' AppendWanted agrees with its
// Wants, and its map with it and with its stale count, and that the index
// counts those wants.
func requireMapsAgree(t *testing.T, n *Notifier, keys []cid.Cid, subs []*Subscription) {
	t.Helper()
	wants := 0
	for j, s := range subs {
		got := s.AppendWanted(nil, keys)
		wants += len(got)
		for _, k := range got {
			require.True(t, s.Wants(k), "subscription %d: AppendWanted and Wants disagree", j)
		}
		live, ended, stale := countEntries(s)
		require.Equal(t, len(got), live, "subscription %d: live entries", j)
		require.Equal(t, ended, stale, "subscription %d: stale entries", j)
	}
	require.Equal(t, wants, n.Stats().Wants)
}

// countEntries reads, under s.mu, how many entries of s's map of keys are
// live and how many ended, and what s counts as stale.
func countEntries(s *Subscription) (live, ended, stale int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.keys {
		if e.ended.Load() {
			ended++
		} else {
			live++
		}
	}
	return live, ended, s.stale
}

// largeSubscriptions makes universe blocks and a Notifier without a store
// with two subscriptions, one with a channel (subs[0]) and one with a
// delivery function (subs[1]).
func largeSubscriptions(t *testing.T, tag string, universe int) ([]blocks.Block, []cid.Cid, *Notifier, []*Subscription) {
	blks := mkBlocks(tag, universe)
	n := newClosedAtEnd(t, nil)
	ch := mustSub(t, n, 1)
	fn, err := n.NewSubscriptionFunc(2, func(ResponseMessage) {})
	require.NoError(t, err)
	return blks, keysOf(blks), n, []*Subscription{ch, fn}
}
