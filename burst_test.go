package notifier

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/bitswapsync/notifier/internal/heaptest"
)

// The tests of this file check that the Notifier gives back the storage of
// a burst (G8): a Go map keeps the storage of the most keys it ever held, so
// an index that once held a million wants kept some 35 MB for the node's
// life. Each makes a burst of burstKeys keys, ends it, and compares the live
// heap with the heap before the burst. Without shrink.Fit, each map of the
// burst keeps about 3.5 MB; the tests allow burstSlack.

const (
	burstKeys  = 100_000
	burstSlack = 1 << 20
)

// burstBlocks are the blocks of the bursts, made once, before any test's
// base heap is read, and shared.
var burstBlocks = sync.OnceValue(func() []blocks.Block { return mkBlocks("burst", burstKeys) })

// TestBurst_WantsGiveBackTheirStorage: the index's maps and the
// subscription's keys map give back a burst's storage however the wants
// end: Unsubscribe (channel and interest subscriptions), delivery, Remove.
func TestBurst_WantsGiveBackTheirStorage(t *testing.T) {
	blks := burstBlocks()
	keys := keysOf(blks)
	for _, c := range burstEnds(blks, keys) {
		t.Run(c.name, func(t *testing.T) { checkBurstEnd(t, c, keys) })
	}
}

// burstEnd is one way a burst's wants end: make makes the subscription, and
// burst ends its wants of all but the first 10 keys (of all, for Remove).
type burstEnd struct {
	name  string
	make  func(n *Notifier) (*Subscription, error)
	burst func(t *testing.T, n *Notifier, s *Subscription)
}

// burstEnds are the ways of TestBurst_WantsGiveBackTheirStorage, over the
// burst's blocks blks and their keys.
func burstEnds(blks []blocks.Block, keys []cid.Cid) []burstEnd {
	deliver := func(t *testing.T, n *Notifier, s *Subscription) { deliverAllButTen(t, n, s, blks) }
	return []burstEnd{
		{
			name:  "Unsubscribe",
			make:  func(n *Notifier) (*Subscription, error) { return n.NewSubscription(1) },
			burst: func(t *testing.T, _ *Notifier, s *Subscription) { s.Unsubscribe(keys[10:]...) },
		},
		{
			name:  "interest/Unsubscribe",
			make:  func(n *Notifier) (*Subscription, error) { return n.NewInterest(1) },
			burst: func(t *testing.T, _ *Notifier, s *Subscription) { s.Unsubscribe(keys[10:]...) },
		},
		{
			name:  "Remove",
			make:  func(n *Notifier) (*Subscription, error) { return n.NewSubscription(1) },
			burst: func(t *testing.T, _ *Notifier, s *Subscription) { s.Remove() },
		},
		{
			name:  "delivery",
			make:  func(n *Notifier) (*Subscription, error) { return n.NewSubscription(1) },
			burst: func(t *testing.T, n *Notifier, s *Subscription) { deliverThenWantAnother(t, n, s, blks) },
		},
		{
			// No want follows: the delivery itself compacts the map, which
			// would otherwise keep the stale entries, and the interests
			// they point to, while s lives.
			name:  "idle after delivery",
			make:  func(n *Notifier) (*Subscription, error) { return n.NewSubscription(1) },
			burst: deliver,
		},
		{
			// The same in messages of 100 blocks, compacted as they come,
			// to a subscription with a delivery function.
			name: "idle after small deliveries",
			make: func(n *Notifier) (*Subscription, error) {
				return n.NewSubscriptionFunc(1, func(ResponseMessage) {})
			},
			burst: func(t *testing.T, n *Notifier, s *Subscription) { deliverInSmallMessages(t, n, blks) },
		},
	}
}

// deliverAllButTen publishes all but the first 10 of blks in one message,
// which s, wanting them all, must receive whole.
func deliverAllButTen(t *testing.T, n *Notifier, s *Subscription, blks []blocks.Block) {
	t.Helper()
	if err := n.Publish(ctx, ResponseMessage{From: "peer", Blocks: blks[10:]}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, s); len(m.Blocks) != len(blks)-10 {
		t.Fatalf("%d blocks delivered, want %d", len(m.Blocks), len(blks)-10)
	}
}

// deliverThenWantAnother delivers as deliverAllButTen does, and then s
// wants a key outside the burst.
func deliverThenWantAnother(t *testing.T, n *Notifier, s *Subscription, blks []blocks.Block) {
	t.Helper()
	deliverAllButTen(t, n, s, blks)
	// The delivered keys' entries in s's keys map are stale; the
	// next want compacts the map.
	if err := s.Subscribe(ctx, mkBlocks("burst after", 1)[0].Cid()); err != nil {
		t.Fatal(err)
	}
}

// deliverInSmallMessages publishes all but the first 10 of blks in messages
// of 100 blocks, after which only the wants of those 10 are left.
func deliverInSmallMessages(t *testing.T, n *Notifier, blks []blocks.Block) {
	t.Helper()
	for i := 10; i < len(blks); i += 100 {
		if err := n.Publish(ctx, ResponseMessage{From: "peer", Blocks: blks[i:min(i+100, len(blks))]}); err != nil {
			t.Fatal(err)
		}
	}
	if st := n.Stats(); st.Wants != 10 {
		t.Fatalf("%d wants left after the deliveries, want 10", st.Wants)
	}
}

// checkBurstEnd makes c's subscription want every key of the burst, ends
// the wants c's way, and checks that the heap is back to what it was
// before the burst and that the wants left are still there.
func checkBurstEnd(t *testing.T, c burstEnd, keys []cid.Cid) {
	t.Helper()
	n := newClosedAtEnd(t, nil, WithShards(1))
	s, err := c.make(n)
	if err != nil {
		t.Fatal(err)
	}
	base := heaptest.Live()
	if err := s.Subscribe(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	if st := n.Stats(); st.Keys != burstKeys {
		t.Fatalf("the burst wants %d keys, want %d", st.Keys, burstKeys)
	}
	c.burst(t, n, s)
	heaptest.RequireBackTo(t, base, burstSlack)
	// What gave the storage back kept the wants that are left: the
	// first 10 keys, but after Remove.
	want := keys[:10]
	if c.name == "Remove" {
		want = nil
	}
	if got := s.AppendWanted(nil, keys); !slices.Equal(got, want) {
		t.Fatalf("the subscription wants %d of the burst's keys after it, want %d", len(got), len(want))
	}
	runtime.KeepAlive(s)
}

// A subscription that got every block it wanted and then went idle gives
// back its entries and the interests they pointed to (accept), though its
// map keeps its storage, under shrink.Floor keys. Here the last delivery
// frees about 200 bytes a key with that, and 82 to 88 without it, when the
// index lets go of the interests but the subscription's entries keep them.
func TestBurst_IdleSubscriptionThatWantsNothingKeepsNoInterests(t *testing.T) {
	const keys = 1000 // under shrink.Floor: the maps keep their storage
	blks := mkBlocks("idle wanting nothing", keys)
	n := newClosedAtEnd(t, nil, WithShards(1))
	s, err := n.NewSubscriptionFunc(1, func(ResponseMessage) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, keysOf(blks)...); err != nil {
		t.Fatal(err)
	}
	wanting := heaptest.Live()
	if err := n.Publish(ctx, ResponseMessage{From: "peer", Blocks: blks}); err != nil {
		t.Fatal(err)
	}
	if st := n.Stats(); st.Wants != 0 {
		t.Fatalf("%d wants left, want none", st.Wants)
	}
	idle := heaptest.Live()
	runtime.KeepAlive(s)
	freed := int64(wanting) - int64(idle)
	t.Logf("the last delivery freed %d B", freed)
	if freed < 140*keys {
		t.Fatalf("the last delivery freed %d bytes a key of the subscription's %d wants; want at least 140", freed/keys, keys)
	}
}

// TestBurst_SubscriptionsGiveBackTheirStorage: the registry gives back the
// storage of a burst of subscriptions once they are removed.
func TestBurst_SubscriptionsGiveBackTheirStorage(t *testing.T) {
	const subs = 50_000 // the registry's map keeps about 1.2 MB without shrink.Fit
	n := newClosedAtEnd(t, nil)
	base := heaptest.Live()
	made := make([]*Subscription, 0, subs)
	for i := range subs {
		s, err := n.NewSubscriptionFunc(uint64(i), func(ResponseMessage) {})
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, s)
	}
	for _, s := range made {
		s.Remove()
	}
	heaptest.RequireBackTo(t, base, burstSlack/4)
}

// TestBurst_RequestsGiveBackTheirStorage: the same for requests
// (NewRequest), listed in a map of their own once they want a key.
func TestBurst_RequestsGiveBackTheirStorage(t *testing.T) {
	const reqs = 50_000
	n := newClosedAtEnd(t, nil)
	k := mkBlocks("burst request", 1)[0].Cid()
	base := heaptest.Live()
	made := make([]*Subscription, 0, reqs)
	for range reqs {
		s, err := n.NewRequest(func(ResponseMessage) {})
		if err == nil {
			err = s.Subscribe(ctx, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, s)
	}
	if got := len(n.requests); got != reqs {
		t.Fatalf("%d requests listed, want %d", got, reqs)
	}
	for _, s := range made {
		s.Remove()
	}
	heaptest.RequireBackTo(t, base, burstSlack/4)
}

// gatedDiscard is a blockstore that holds nothing: its PutMany waits for
// release (once entered is closed) and then discards the blocks, so that
// a test can hold a Publish's reservations without the store's own memory
// in its heap.
type gatedDiscard struct {
	entered, release chan struct{}
}

func (g *gatedDiscard) Has(context.Context, cid.Cid) (bool, error) { return false, nil }

func (g *gatedDiscard) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (g *gatedDiscard) PutMany(context.Context, []blocks.Block) error {
	close(g.entered)
	<-g.release
	return nil
}

// TestBurst_ReservationsAndMarksGiveBackTheirStorage: a Publish of a burst
// of blocks reserves every key while its PutMany runs, and a Subscribe of
// those keys waits, marking the one it sleeps on (Notifier.markBusy); the
// reservations' map gives the storage back once the operations are over.
func TestBurst_ReservationsAndMarksGiveBackTheirStorage(t *testing.T) {
	blks := burstBlocks()
	keys := keysOf(blks)
	g := &gatedDiscard{entered: make(chan struct{}), release: make(chan struct{})}
	n := newClosedAtEnd(t, g, WithShards(1))
	s := mustSub(t, n, 1)
	base := heaptest.Live()
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: blks}) }() // local: every block is stored
	<-g.entered
	subscribed := make(chan error, 1)
	go func() { subscribed <- s.Subscribe(ctx, keys...) }()
	waitWaiting(t, n, 1)
	idx := &n.shards[0].idx
	n.shards[0].mu.Lock()
	reserved, marked := len(idx.res.m), len(idx.marks)
	n.shards[0].mu.Unlock()
	close(g.release)
	if reserved < burstKeys-1 || marked != 1 {
		t.Fatalf("the burst reserved %d keys in the map and marked %d; want %d and 1", reserved, marked, burstKeys-1)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if err := <-subscribed; err != nil {
		t.Fatal(err)
	}
	s.Unsubscribe(keys...)
	heaptest.RequireBackTo(t, base, burstSlack)
	runtime.KeepAlive(s)
	runtime.KeepAlive(keys) // alive at base: dead by the end, it would hide 1.6 MB (review)
}
