package notifier

import (
	"context"
	"slices"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// A cancel function that panics inside Close, while Close ends its first
// subscription: Close still ends the others and waits for what it waits
// for before the panic goes on, and a second Close, which sync.Once makes
// return at once, finds the Notifier fully closed. Found by review: the
// other subscriptions stayed open, their wants in the index.
func TestClose_PanickingCancelFunctionClosesEverything(t *testing.T) {
	ctx := context.Background()
	n := New(nil, WithCancelFunc(func([]cid.Cid) { panic("cancel") }))
	b := mkBlocks("close-panic", 2)
	a, c := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, a.Subscribe(ctx, b[0].Cid()))
	require.NoError(t, c.Subscribe(ctx, b[1].Cid()))

	require.Panics(t, func() { _ = n.Close() }, "the cancel function's panic reaches Close's caller")
	requireNothingHeld(t, n, a, c)
	require.NoError(t, n.Close(), "a second Close")

	require.Equal(t, Stats{}, n.Stats(), "after Close returned, the index and the registry hold nothing")
	for _, s := range []*Subscription{a, c} {
		closedNow(t, s)
		require.ErrorIs(t, s.Err(), ErrClosed)
	}
}

// Remove returns once Messages() is closed, also when the cancel function
// panics: the panic waits for the drain goroutine as the return does.
func TestRemove_PanickingCancelFunctionClosesMessagesFirst(t *testing.T) {
	ctx := context.Background()
	b := mkBlocks("remove-panic", 3)
	n := New(nil, WithBufferSize(1), WithCancelFunc(func(keys []cid.Cid) {
		if slices.Contains(keys, b[2].Cid()) {
			panic("cancel")
		}
	}))
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	// Two messages: the first fills out, the second starts the drain
	// goroutine, which waits for out.
	for _, blk := range b[:2] {
		require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{blk}}))
	}

	require.Panics(t, func() { s.Remove() }, "the cancel function's panic reaches Remove's caller")

	for got := 0; ; got++ {
		select {
		case _, ok := <-s.Messages():
			if ok {
				continue
			}
		default:
			t.Fatalf("Messages() still open when Remove's panic reached its caller (%d messages read)", got)
		}
		break
	}
	require.NoError(t, n.Close())
}

// Close refreshes the gauges: the subscriptions gauge stops counting the
// requests that Close ends without listing them, even when it ends no
// listed subscription (whose close would refresh them). Found by review.
func TestClose_RefreshesTheSubscriptionsGauge(t *testing.T) {
	ctx := context.Background()
	reg := promtest.Registry(t)
	n := New(memStore(), WithMetrics(kuboScope()))
	b := mkBlocks("close-gauge", 1)[0]
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
	r, err := n.NewRequest(nil)
	require.NoError(t, err)
	require.NoError(t, r.Subscribe(ctx, b.Cid())) // found: r wants nothing and is never listed
	require.Equal(t, 1.0, gaugeValue(t, reg, promPrefix+mSubscriptions))

	require.NoError(t, n.Close())
	require.Equal(t, 0, n.Stats().Subscriptions)
	require.Equal(t, 0.0, gaugeValue(t, reg, promPrefix+mSubscriptions), "the subscriptions gauge after Close")
}
