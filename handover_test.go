package notifier

import (
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// These tests check that an operation takes effect at one instant for an
// observer on the same keys: once a read call or another operation has seen
// it done, the messages it hands to channel subscriptions are in their
// channels. The hand-over (handOver) has no point where a test can stop it,
// so each test widens it instead: handOverFillers subscriptions want the key
// before the one watched, which is handed its message last, and the test
// spins on Subscription.Wants until it sees the operation done. That is a
// schedule, not a race to win: the check after the spin fails only if the
// watched subscription's message is missing at that point, which the
// guarantee forbids. Before the fix each failed in every run here (2 cores,
// with and without -race).
const handOverFillers = 30000

// fillers makes handOverFillers subscriptions that want k.
func fillers(t *testing.T, n *Notifier, k cid.Cid) {
	t.Helper()
	for i := range handOverFillers {
		require.NoError(t, mustSub(t, n, uint64(100+i)).Subscribe(ctx, k))
	}
}

// watched sets up a hand-over test on n: an interest subscription that
// wants k, if interest, then the fillers, then x, the subscription watched,
// which wants k last and so gets its message last.
func watched(t *testing.T, n *Notifier, k cid.Cid, interest bool) (in, x *Subscription) {
	t.Helper()
	if interest {
		var err error
		in, err = n.NewInterest(1)
		require.NoError(t, err)
		require.NoError(t, in.Subscribe(ctx, k))
	}
	fillers(t, n, k)
	x = mustSub(t, n, 2)
	require.NoError(t, x.Subscribe(ctx, k))
	return in, x
}

// received reports whether s has a message of one block in its channel.
func received(s *Subscription) bool {
	select {
	case m, ok := <-s.Messages():
		return ok && len(m.Blocks) == 1
	default:
		return false
	}
}

// publishUntilDelivered starts a remote Publish of b and returns once x no
// longer wants b's key: the Publish has ended x's want of it. The channel
// gets what Publish returns.
func publishUntilDelivered(n *Notifier, b blocks.Block, x *Subscription) <-chan error {
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}) }()
	for x.Wants(b.Cid()) {
	}
	return published
}

// A remote Publish delivers k to x while an interest subscription holds k:
// k's last want does not end, so its shard is not one the cancel function
// needs (keep). Once x.Wants(k) is false, x's message is in its channel,
// which has room for it.
func TestHandOver_WantsWaitsForTheMessageOfAnUncancelledKey(t *testing.T) {
	wantsThenMessage(t, true)
}

// The same without the interest subscription: k is cancelled, and its shard
// kept across the hand-over for the cancel function.
func TestHandOver_WantsWaitsForTheMessageOfACancelledKey(t *testing.T) {
	wantsThenMessage(t, false)
}

func wantsThenMessage(t *testing.T, interest bool) {
	n := New(nil, WithBufferSize(1))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b := mkBlocks("handover-wants", 1)[0]
	_, x := watched(t, n, b.Cid(), interest)

	published := publishUntilDelivered(n, b, x)
	got := received(x)
	require.NoError(t, <-published)
	require.True(t, got, "x.Wants(k) is false, but x's block is not in Messages()")
}

// The same seen through the cancel function: once x's want of k has ended,
// the interest subscription's Unsubscribe of k ends k's last want, reports
// it and returns; by then x's message is in its channel.
func TestHandOver_CancelWaitsForTheMessageOfAnUncancelledKey(t *testing.T) {
	cancels := &cancelLog{}
	n := New(nil, WithBufferSize(1), WithCancelFunc(cancels.record))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b := mkBlocks("handover-cancel", 1)[0]
	k := b.Cid()
	in, x := watched(t, n, k, true)

	published := publishUntilDelivered(n, b, x)
	in.Unsubscribe(k)
	reported := cancels.take()
	got := received(x)
	require.NoError(t, <-published)
	require.Equal(t, []cid.Cid{k}, reported, "the interest's Unsubscribe ended k's last want")
	require.True(t, got, "k was reported and Unsubscribe returned, but x's block is not in Messages()")
}

// A Subscribe of k1, stored behind the Notifier's back and wanted by other
// subscriptions, and of k2, not stored, in another shard. It ends k1's last
// want (delivering k1 to everyone) and records s's want of k2. Once
// s.Wants(k2) is true, the block it found for k1 is in s's channel.
func TestHandOver_SubscribeWantWaitsForItsFoundBlock(t *testing.T) {
	bs := memStore()
	n := New(bs, WithBufferSize(1))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b1 := mkBlocks("handover-sub", 1)[0]
	k1 := b1.Cid()
	k2 := keysInOtherShards(n, k1, "handover-sub-k2", 1)[0].Cid()
	fillers(t, n, k1)
	require.NoError(t, bs.PutMany(ctx, []blocks.Block{b1}))
	s := mustSub(t, n, 2)

	subscribed := make(chan error, 1)
	go func() { subscribed <- s.Subscribe(ctx, k1, k2) }()
	for !s.Wants(k2) {
	}
	got := received(s)
	require.NoError(t, <-subscribed)
	require.True(t, got, "s.Wants(k2) is true, but the block the same Subscribe found for k1 is not in Messages()")
}

// A Publish of a HAVE of k changes no want, and its hand-out takes a while:
// handOverFillers subscriptions and x want k, and first, created before
// them, is handed its message first. Once first has it, a Subscribe of k by
// a new subscription z returns; z never gets the HAVE, so its Subscribe is
// ordered after the Publish, and by then x's HAVE is in its channel.
func TestHandOver_SubscribeWaitsForTheHaveOfAPublish(t *testing.T) {
	n := New(nil, WithBufferSize(1))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	k := mkBlocks("handover-have", 1)[0].Cid()
	first := mustSub(t, n, 99) // first in the lock order: created first
	require.NoError(t, first.Subscribe(ctx, k))
	fillers(t, n, k)
	x := mustSub(t, n, 2)
	require.NoError(t, x.Subscribe(ctx, k))

	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{k}}) }()
	<-first.Messages() // the Publish is handing out
	z := mustSub(t, n, 3)
	require.NoError(t, z.Subscribe(ctx, k))
	got := false
	select {
	case m := <-x.Messages():
		got = len(m.Haves) == 1
	default:
	}
	require.NoError(t, <-published)
	select {
	case m := <-z.Messages():
		t.Fatalf("z got %v: its Subscribe came before the Publish, which the schedule above rules out", m)
	default:
	}
	require.True(t, got, "z.Subscribe(k) returned, ordered after the Publish, but x's HAVE is not in Messages()")
}
