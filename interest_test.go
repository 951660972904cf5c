package notifier

import (
	"fmt"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Interest subscriptions (NewInterest): wants that outlive delivery, that
// receive nothing, and that count as wants for storage and cancels.

// A delivered block ends the normal subscription's want but not the interest
// subscription's: the key stays wanted, so a second copy from another peer
// is stored again, and no cancel is reported.
func TestInterest_WantSurvivesDelivery(t *testing.T) {
	cs := newCountStore()
	n, cancels := newWithCancels(t, cs)
	b := mkBlocks("survive", 1)[0]
	k := b.Cid()
	in, s := mustInterest(t, n, 1), mustSub(t, n, 2)
	got := spyMessages(t, in)
	require.NoError(t, in.Subscribe(ctx, k))
	require.NoError(t, s.Subscribe(ctx, k))
	require.Equal(t, Stats{Subscriptions: 2, Keys: 1, Wants: 2}, n.Stats())

	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p1", Blocks: []blocks.Block{b}}))
	require.Equal(t, ResponseMessage{From: "p1", Blocks: []blocks.Block{b}}, recv(t, s))
	require.Equal(t, []cid.Cid{k}, cs.takePut())
	require.False(t, s.Wants(k), "delivery ends a normal want")
	require.True(t, in.Wants(k), "delivery does not end an interest")
	require.True(t, n.Interested(k))
	require.True(t, n.Wanted(k))
	require.Equal(t, Stats{Subscriptions: 2, Keys: 1, Wants: 1}, n.Stats())
	require.Empty(t, cancels.take(), "the interest still wants the key")

	for _, from := range []string{"p2", "p3"} {
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: from, Blocks: []blocks.Block{b}}))
		require.Equal(t, []cid.Cid{k}, cs.takePut(), "a remote block an interest wants is stored, every time")
		require.True(t, in.Wants(k))
		require.Equal(t, Stats{Subscriptions: 2, Keys: 1, Wants: 1}, n.Stats())
	}
	none(t, s)
	openAndEmpty(t, in)
	require.Empty(t, got.take(), "an interest subscription is handed nothing")
	require.Empty(t, cancels.take())
}

// Publish step 1 counts interest wants: a remote block wanted only by
// interest subscriptions is stored (once, however often it repeats in the
// message and however many interests want it), an unwanted one is not.
func TestInterest_RemoteBlockWantedOnlyByInterestIsStored(t *testing.T) {
	cs := newCountStore()
	n, cancels := newWithCancels(t, cs)
	b := mkBlocks("store-held", 3)
	in1, in2 := mustInterest(t, n, 1), mustInterest(t, n, 2)
	require.NoError(t, in1.Subscribe(ctx, b[0].Cid(), b[1].Cid()))
	require.NoError(t, in2.Subscribe(ctx, b[1].Cid()))

	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b[0], b[2], b[0], b[1], b[1]}}))
	require.Equal(t, sorted(b[0].Cid(), b[1].Cid()), sorted(cs.takePut()...), "each wanted block once, the unwanted one not")
	for i, want := range []bool{true, true, false} {
		has, err := cs.Blockstore.Has(ctx, b[i].Cid())
		require.NoError(t, err)
		require.Equal(t, want, has, "block %d", i)
	}
	require.Equal(t, Stats{Subscriptions: 2, Keys: 2, Wants: 3}, n.Stats())
	require.Empty(t, cancels.take())

	// Once the interests let go, a remote copy is unsolicited again.
	require.Equal(t, []cid.Cid{b[0].Cid()}, in1.ReleaseAll(), "in2 still holds k1")
	require.Equal(t, []cid.Cid{b[1].Cid()}, in2.ReleaseAll())
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b}))
	require.Empty(t, cs.takePut())
}

// An interest subscription is handed nothing: no blocks, HAVEs or
// DONT_HAVEs, while the normal subscriptions that want the same keys get
// theirs. Its Messages() is only a done signal.
func TestInterest_ReceivesNoMessages(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("no-msgs", 3)
	k := keysOf(b)
	in, s := mustInterest(t, n, 1), mustSub(t, n, 2)
	got := spyMessages(t, in)
	require.NoError(t, in.Subscribe(ctx, k...))
	require.NoError(t, s.Subscribe(ctx, k[1], k[2]))

	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: k, DontHaves: k}))
	require.Equal(t, ResponseMessage{From: "p", Haves: k[1:], DontHaves: k[1:]}, recv(t, s))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:2], Haves: k[2:]}))
	require.Equal(t, ResponseMessage{From: "p", Blocks: b[1:2], Haves: k[2:]}, recv(t, s))
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b})) // local
	require.Equal(t, ResponseMessage{Blocks: b[2:]}, recv(t, s))
	none(t, s)

	require.Empty(t, got.take())
	openAndEmpty(t, in)
	require.Zero(t, cap(in.Messages()), "a done signal needs no buffer")
	for _, key := range k {
		require.True(t, in.Wants(key))
	}
	in.Remove()
	closedNow(t, in)
	require.NoError(t, in.Err())
}

// The Subscribe of an interest subscription makes no blockstore call, even
// for a key whose block is stored, and delivers nothing: its want stays.
// A normal Subscribe of the same key does check, and its hit leaves the
// interest alone.
func TestInterest_SubscribeMakesNoBlockstoreCall(t *testing.T) {
	cs := newCountStore()
	n, cancels := newWithCancels(t, cs)
	b := mkBlocks("no-bs", 2)
	require.NoError(t, cs.Blockstore.PutMany(ctx, b[:1])) // behind the counter's back
	in := mustInterest(t, n, 1)
	got := spyMessages(t, in)

	require.NoError(t, in.Subscribe(ctx, keysOf(b)...))
	has, get, put := cs.calls()
	require.Zero(t, has+get+put, "Has %d, Get %d, PutMany %d", has, get, put)
	require.Empty(t, got.take())
	require.True(t, in.Wants(b[0].Cid()), "a stored block does not satisfy an interest")
	require.Equal(t, Stats{Subscriptions: 1, Keys: 2, Wants: 2}, n.Stats())

	s := mustSub(t, n, 2)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	_, get, _ = cs.calls()
	require.EqualValues(t, 1, get, "a normal Subscribe checks the blockstore")
	require.Equal(t, ResponseMessage{Blocks: b[:1]}, recv(t, s))
	require.True(t, in.Wants(b[0].Cid()))
	require.Empty(t, got.take())
	require.Empty(t, cancels.take())
	require.Equal(t, Stats{Subscriptions: 2, Keys: 2, Wants: 2}, n.Stats())
}

// Interest subscriptions share the session registry with NewSubscription and
// NewSubscriptionFunc.
func TestInterest_SharesSessionIDs(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	in := mustInterest(t, n, 1)
	_, err := n.NewSubscription(1)
	require.ErrorIs(t, err, ErrDuplicateSession)
	_, err = n.NewSubscriptionFunc(1, nil)
	require.ErrorIs(t, err, ErrDuplicateSession)
	_, err = n.NewInterest(1)
	require.ErrorIs(t, err, ErrDuplicateSession)

	s := mustSub(t, n, 2)
	_, err = n.NewInterest(2)
	require.ErrorIs(t, err, ErrDuplicateSession)
	require.Equal(t, 2, n.Stats().Subscriptions, "a refused registration counts nothing")

	in.Remove()
	again := mustInterest(t, n, 1)
	require.Equal(t, uint64(1), again.ID())
	s.Remove()
	mustSub(t, n, 2)

	require.NoError(t, n.Close())
	_, err = n.NewInterest(3)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, again.Subscribe(ctx, mkBlocks("closed", 1)[0].Cid()), ErrClosed)
}

// An interest ends by Unsubscribe, Release, Remove, ReleaseAll and Close,
// and by nothing else.
func TestInterest_EndsOnlyWhenLetGo(t *testing.T) {
	ends := []struct {
		name   string
		end    func(t *testing.T, n *Notifier, in *Subscription, k cid.Cid)
		closed bool  // Messages() is closed after end
		err    error // Err() after end
	}{
		{"Unsubscribe", func(_ *testing.T, _ *Notifier, in *Subscription, k cid.Cid) { in.Unsubscribe(k) }, false, nil},
		{"Release", func(_ *testing.T, _ *Notifier, in *Subscription, k cid.Cid) { in.Release(k) }, false, nil},
		{"Remove", func(_ *testing.T, _ *Notifier, in *Subscription, _ cid.Cid) { in.Remove() }, true, nil},
		{"ReleaseAll", func(_ *testing.T, _ *Notifier, in *Subscription, _ cid.Cid) { in.ReleaseAll() }, true, nil},
		{"Close", func(t *testing.T, n *Notifier, _ *Subscription, _ cid.Cid) { require.NoError(t, n.Close()) }, true, ErrClosed},
	}
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			n, cancels := newWithCancels(t, memStore())
			b := mkBlocks("ends-"+e.name, 1)[0]
			in := mustInterest(t, n, 7)
			require.NoError(t, in.Subscribe(ctx, b.Cid()))
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}, Haves: []cid.Cid{b.Cid()}}))
			require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
			require.True(t, in.Wants(b.Cid()), "publishing does not end an interest")
			require.Empty(t, cancels.take())

			e.end(t, n, in, b.Cid())
			require.False(t, in.Wants(b.Cid()))
			require.False(t, n.Interested(b.Cid()))
			require.False(t, n.Wanted(b.Cid()))
			require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
			if e.closed {
				closedNow(t, in)
				require.ErrorIs(t, in.Subscribe(ctx, b.Cid()), ErrClosed, "an ended subscription takes no want")
			} else {
				openAndEmpty(t, in)
				require.NoError(t, in.Subscribe(ctx, b.Cid()), "a live interest may want the key again")
				require.True(t, in.Wants(b.Cid()))
			}
			if e.err == nil {
				require.NoError(t, in.Err())
			} else {
				require.ErrorIs(t, in.Err(), e.err)
			}
		})
	}
}

// The cancel function hears of a key only when its last want of any kind
// ends: whichever kind subscribed first, and whichever let go first, the key
// is reported once, by the operation that ended the second want.
func TestInterestCancel_OnlyWhenLastWantOfAnyKindEnds(t *testing.T) {
	normalEnds := map[string]func(t *testing.T, n *Notifier, s *Subscription, b blocks.Block){
		"Publish": func(t *testing.T, n *Notifier, s *Subscription, b blocks.Block) {
			require.NoError(t, publishFromPeer(n, b))
			require.Equal(t, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}, recv(t, s))
		},
		"Unsubscribe": func(_ *testing.T, _ *Notifier, s *Subscription, b blocks.Block) { s.Unsubscribe(b.Cid()) },
		"Remove":      func(_ *testing.T, _ *Notifier, s *Subscription, _ blocks.Block) { s.Remove() },
	}
	interestEnds := map[string]func(in *Subscription, k cid.Cid){
		"Unsubscribe": func(in *Subscription, k cid.Cid) { in.Unsubscribe(k) },
		"Release":     func(in *Subscription, k cid.Cid) { in.Release(k) },
		"Remove":      func(in *Subscription, _ cid.Cid) { in.Remove() },
		"ReleaseAll":  func(in *Subscription, _ cid.Cid) { in.ReleaseAll() },
	}
	for _, interestFirst := range []bool{true, false} {
		for _, normalLetsGoFirst := range []bool{true, false} {
			for nName, endNormal := range normalEnds {
				for iName, endInterest := range interestEnds {
					name := fmt.Sprintf("interestFirst=%v/normalLetsGoFirst=%v/normal%s/interest%s", interestFirst, normalLetsGoFirst, nName, iName)
					t.Run(name, func(t *testing.T) {
						n, cancels, b, in, s := bothKindsWantOneKey(t, interestFirst)
						k := b.Cid()
						endFirst, endSecond := func() { endNormal(t, n, s, b) }, func() { endInterest(in, k) }
						if !normalLetsGoFirst {
							endFirst, endSecond = endSecond, endFirst
						}
						firstLetsGoUnreported(t, n, cancels, k, endFirst, normalLetsGoFirst)
						secondLetsGoReported(t, n, cancels, k, endSecond)

						in.Remove()
						s.Remove()
						require.Empty(t, cancels.take(), "reported twice")
						require.Equal(t, Stats{}, n.Stats())
					})
				}
			}
		}
	}
}

// bothKindsWantOneKey returns a Notifier whose cancels are recorded, and in
// it an interest subscription in and a normal one s that both want b's key,
// the interest first if interestFirst.
func bothKindsWantOneKey(t *testing.T, interestFirst bool) (n *Notifier, cancels *cancelLog, b blocks.Block, in, s *Subscription) {
	t.Helper()
	n, cancels = newWithCancels(t, memStore())
	b = mkBlocks("interplay", 1)[0]
	k := b.Cid()
	in, s = mustInterest(t, n, 1), mustSub(t, n, 2)
	first, second := in, s
	if !interestFirst {
		first, second = s, in
	}
	require.NoError(t, first.Subscribe(ctx, k))
	require.NoError(t, second.Subscribe(ctx, k))
	require.Equal(t, 1, n.Stats().Keys, "one key, two wants")
	require.Equal(t, 2, n.Stats().Wants)
	return n, cancels, b, in, s
}

// firstLetsGoUnreported ends the first of k's two wants (endFirst; the
// normal one if normalFirst) and checks that the cancel function hears
// nothing of k, which the other kind still wants.
func firstLetsGoUnreported(t *testing.T, n *Notifier, cancels *cancelLog, k cid.Cid, endFirst func(), normalFirst bool) {
	t.Helper()
	endFirst()
	require.Empty(t, cancels.take(), "the other kind still wants the key")
	require.True(t, n.Wanted(k))
	require.Equal(t, normalFirst, n.Interested(k))
	require.Equal(t, 1, n.Stats().Keys)
	require.Equal(t, 1, n.Stats().Wants)
}

// secondLetsGoReported ends k's last want (endSecond) and checks that the
// cancel function hears of k, once, and that nothing wants it.
func secondLetsGoReported(t *testing.T, n *Notifier, cancels *cancelLog, k cid.Cid, endSecond func()) {
	t.Helper()
	endSecond()
	require.Equal(t, []cid.Cid{k}, cancels.take())
	require.False(t, n.Wanted(k))
	require.False(t, n.Interested(k))
	require.Zero(t, n.Stats().Keys)
	require.Zero(t, n.Stats().Wants)
}

// publishFromPeer publishes b as received from a peer.
func publishFromPeer(n *Notifier, b blocks.Block) error {
	return n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}})
}

// Stats counts a key wanted by both kinds once, and every want of either
// kind; when everything is removed, every gauge is 0 (G8), however the
// wants ended.
func TestInterestStats_CountKeysOnceAcrossKinds(t *testing.T) {
	n, _ := newWithCancels(t, memStore(), WithShards(4))
	b := mkBlocks("stats", 6)
	k := keysOf(b)
	in1, in2 := mustInterest(t, n, 1), mustInterest(t, n, 2)
	s1, s2 := mustSub(t, n, 3), mustSub(t, n, 4)
	require.NoError(t, in1.Subscribe(ctx, k[0], k[1], k[2]))
	require.NoError(t, in2.Subscribe(ctx, k[1], k[3]))
	require.NoError(t, s1.Subscribe(ctx, k[1], k[2], k[4]))
	require.NoError(t, s2.Subscribe(ctx, k[2], k[5]))
	require.Equal(t, Stats{Subscriptions: 4, Keys: 6, Wants: 10}, n.Stats())

	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:3]}))
	recv(t, s1)
	recv(t, s2)
	require.Equal(t, Stats{Subscriptions: 4, Keys: 6, Wants: 7}, n.Stats(), "k1 and k2 stay, held by interests")

	s1.Unsubscribe(k[4])
	require.Equal(t, Stats{Subscriptions: 4, Keys: 5, Wants: 6}, n.Stats())
	in1.Unsubscribe(k[2])
	require.Equal(t, Stats{Subscriptions: 4, Keys: 4, Wants: 5}, n.Stats())
	require.NoError(t, s2.Subscribe(ctx, k[0])) // a normal want of a key only an interest held
	require.Equal(t, Stats{Subscriptions: 4, Keys: 4, Wants: 6}, n.Stats())
	in1.Unsubscribe(k[0])
	require.Equal(t, Stats{Subscriptions: 4, Keys: 4, Wants: 5}, n.Stats(), "s2 still wants k0")

	for _, s := range []*Subscription{in2, s2, in1, s1} {
		s.Remove()
	}
	requireIndexEmpty(t, n)
	require.Empty(t, n.sessions)
}

// Wants is per subscription and per kind; Wanted is any want; Interested and
// AppendInterested see only interest subscriptions.
func TestInterestQueries_Answers(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("queries", 4)
	k := keysOf(b)
	in1, in2 := mustInterest(t, n, 11), mustInterest(t, n, 12)
	s, other := mustSub(t, n, 21), mustSub(t, n, 22)
	require.NoError(t, in1.Subscribe(ctx, k[0], k[1]))
	require.NoError(t, in2.Subscribe(ctx, k[1]))
	require.NoError(t, s.Subscribe(ctx, k[1], k[2]))

	assertWants(t, k, in1, true, true, false, false)
	assertWants(t, k, in2, false, true, false, false)
	assertWants(t, k, s, false, true, true, false)
	assertWants(t, k, other, false, false, false, false)
	for i, w := range []bool{true, true, true, false} {
		assert.Equal(t, w, n.Wanted(k[i]), "Wanted key %d", i)
	}
	for i, w := range []bool{true, true, false, false} {
		assert.Equal(t, w, n.Interested(k[i]), "Interested key %d", i)
	}
	prefix := []uint64{99, 98}
	checkAppendInterested(t, n, k, prefix)

	// Delivery ends s's wants, not the interests'.
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:3]}))
	recv(t, s)
	assertWants(t, k, in1, true, true, false, false)
	assertWants(t, k, in2, false, true, false, false)
	assertWants(t, k, s, false, false, false, false)
	for i, w := range []bool{true, true, false, false} {
		assert.Equal(t, w, n.Wanted(k[i]), "Wanted key %d after delivery", i)
		assert.Equal(t, w, n.Interested(k[i]), "Interested key %d after delivery", i)
	}
	require.ElementsMatch(t, []uint64{11, 12}, n.AppendInterested(nil, k[1]))

	checkUndefWantedByNobody(t, n, in1, s, prefix)

	in1.Remove()
	require.False(t, in1.Wants(k[0]), "an ended subscription wants nothing")
	require.False(t, n.Interested(k[0]))
	require.Equal(t, []uint64{12}, n.AppendInterested(nil, k[1]))
}

// assertWants checks sub.Wants(k[i]) against want[i] for each i.
func assertWants(t *testing.T, k []cid.Cid, sub *Subscription, want ...bool) {
	t.Helper()
	for i, w := range want {
		assert.Equal(t, w, sub.Wants(k[i]), "subscription %d, key %d", sub.ID(), i)
	}
}

// checkAppendInterested checks, before delivery, that AppendInterested
// lists the interests in each of k (ids 11 and 12) and no normal want, and
// appends to what its dst, prefix, holds.
func checkAppendInterested(t *testing.T, n *Notifier, k []cid.Cid, prefix []uint64) {
	t.Helper()
	require.Equal(t, []uint64{11}, n.AppendInterested(nil, k[0]))
	require.ElementsMatch(t, []uint64{11, 12}, n.AppendInterested(nil, k[1]))
	require.Empty(t, n.AppendInterested(nil, k[2]), "a normal want is no interest")
	require.Empty(t, n.AppendInterested(nil, k[3]))
	got := n.AppendInterested(prefix[:2:2], k[0])
	require.Equal(t, []uint64{99, 98, 11}, got, "appends, keeps what was there")
}

// checkUndefWantedByNobody checks that nobody wants an undefined key: not
// the interest in1, not s, not n; AppendInterested adds nothing to prefix.
func checkUndefWantedByNobody(t *testing.T, n *Notifier, in1, s *Subscription, prefix []uint64) {
	t.Helper()
	require.False(t, in1.Wants(cid.Undef))
	require.False(t, s.Wants(cid.Undef))
	require.False(t, n.Wanted(cid.Undef))
	require.False(t, n.Interested(cid.Undef))
	require.Nil(t, n.AppendInterested(nil, cid.Undef))
	require.Equal(t, prefix, n.AppendInterested(prefix, cid.Undef))
}

// Wants answers for each of many subscriptions of one key (the long lists
// that Wants answers from the subscription's own map), of both kinds,
// before and after delivery.
func TestInterestQueries_ManyWantersOfOneKey(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("many", 1)[0]
	var ins, subs []*Subscription
	for i := range 12 {
		in := mustInterest(t, n, uint64(100+i))
		s := mustSub(t, n, uint64(200+i))
		require.NoError(t, in.Subscribe(ctx, b.Cid()))
		require.NoError(t, s.Subscribe(ctx, b.Cid()))
		ins, subs = append(ins, in), append(subs, s)
	}
	outsider := mustInterest(t, n, 300)
	outsiderSub := mustSub(t, n, 301)
	check := func(normalWants bool) {
		t.Helper()
		for i := range ins {
			require.True(t, ins[i].Wants(b.Cid()), "interest %d", i)
			require.Equal(t, normalWants, subs[i].Wants(b.Cid()), "subscription %d", i)
		}
		require.False(t, outsider.Wants(b.Cid()))
		require.False(t, outsiderSub.Wants(b.Cid()))
		require.Len(t, n.AppendInterested(nil, b.Cid()), len(ins))
	}
	check(true)
	require.Equal(t, Stats{Subscriptions: 26, Keys: 1, Wants: 24}, n.Stats())
	require.NoError(t, publishFromPeer(n, b))
	for _, s := range subs {
		recv(t, s)
	}
	check(false)
	require.Equal(t, Stats{Subscriptions: 26, Keys: 1, Wants: 12}, n.Stats())
}

// AppendWanted answers, under the subscription's own lock, what Wants
// answers key by key: for an interest subscription and for a session, before
// and after Release, delivery and Remove, keeping the order of keys and
// skipping undefined ones.
func TestAppendWanted_AgreesWithWants(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	b := mkBlocks("append-wanted", 4)
	k := keysOf(b)
	in, err := n.NewInterest(1)
	require.NoError(t, err)
	ses := mustSub(t, n, 2)
	require.NoError(t, in.Subscribe(ctx, k[0], k[1], k[2]))
	require.NoError(t, ses.Subscribe(ctx, k[1], k[2], k[3]))
	ask := []cid.Cid{k[3], cid.Undef, k[2], k[1], k[0], k[2]}
	check := func(what string) {
		t.Helper()
		for _, s := range []*Subscription{in, ses} {
			want := []cid.Cid{}
			for _, key := range ask {
				if s.Wants(key) {
					want = append(want, key)
				}
			}
			got := s.AppendWanted([]cid.Cid{k[0]}, ask)
			require.Equal(t, k[0], got[0], "%s: dst is kept", what)
			require.Equal(t, want, append([]cid.Cid{}, got[1:]...), "%s: subscription %d", what, s.ID())
		}
	}
	check("subscribed")
	require.Equal(t, []cid.Cid{k[3], k[2], k[1], k[2]}, ses.AppendWanted(nil, ask), "in the order asked")
	in.Release(k[2])
	check("after Release")
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:2]}))
	check("after the delivery of k1")
	require.Equal(t, []cid.Cid{k[1], k[0]}, in.AppendWanted(nil, ask), "an interest outlives delivery")
	ses.Remove()
	check("after Remove")
	require.Nil(t, ses.AppendWanted(nil, ask))
}
