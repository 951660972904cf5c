package notifier

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// G6: a subscription that a Publish overflowed past WithMaxPending reports
// ErrSlowConsumer, and is counted as one, even when a Remove or a Close ends
// it between the overflow and that Publish's own end of it. Messages were
// dropped for its slowness from the overflow on; an Err of nil (Remove) or
// ErrClosed (Close) would hide that from the consumer, and the slow consumer
// from the log and slow_consumers_total.
//
// The Publish that overflows the subscription also ends the last want of
// another key, in another shard; its cancel function, which runs before the
// Publish ends its slow consumers, waits until the Remove or Close returned.
func TestSubscription_OverflowedThenEndedByAnotherCallIsASlowConsumer(t *testing.T) {
	for _, end := range []string{"Remove", "Close"} {
		t.Run(end, func(t *testing.T) {
			reg := promtest.Registry(t)
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				inCancel, release := make(chan struct{}), make(chan struct{})
				releaseOnce := sync.OnceFunc(func() { close(release) })
				defer releaseOnce() // also when an assertion fails: the bubble must not end with the Publish blocked
				var calls atomic.Int32
				n := New(memStore(), WithMetrics(kuboScope()), WithBufferSize(1), WithMaxPending(1),
					WithCancelFunc(func([]cid.Cid) {
						if calls.Add(1) == 1 { // the Publish's; the Remove's or Close's goes through
							close(inCancel)
							<-release
						}
					}))
				k := blocks.NewBlock([]byte("overflow race: the laggard's key")).Cid()
				other := keysInOtherShards(n, k, "overflow race: another key", 1)[0]
				slow, last := mustSub(t, n, 1), mustSub(t, n, 2)
				require.NoError(t, slow.Subscribe(ctx, k))
				require.NoError(t, last.Subscribe(ctx, other.Cid()))
				for i := range 3 { // slow's buffer, the message drain holds, the backlog (1)
					seqHave(t, n, k, i)
					synctest.Wait() // drain, if started, has taken its message and waits for out
				}

				published := make(chan error, 1)
				go func() { // overflows slow; ends last's want of other: the cancel function
					published <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{k}, Blocks: []blocks.Block{other}})
				}()
				<-inCancel
				closed := make(chan error, 1)
				if end == "Remove" {
					slow.Remove()
				} else {
					// Close ends every subscription, then waits for the
					// operations in flight (barrier): for the Publish.
					go func() { closed <- n.Close() }()
					waitBlockedOnMutex(t, "notifier.(*Notifier).barrier")
				}
				require.ErrorIs(t, slow.Err(), ErrSlowConsumer, "Err after the %s, the overflowing Publish still in its cancel function", end)
				releaseOnce()
				require.NoError(t, <-published)
				if end == "Close" {
					require.NoError(t, <-closed)
				}
				require.ErrorIs(t, slow.Err(), ErrSlowConsumer, "Err after the overflowing Publish returned")
				require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(
					exposition("counter", promPrefix+"slow_consumers_total", "Subscriptions ended as slow consumers (past WithMaxPending).", 1)),
					promPrefix+"slow_consumers_total"))
				require.Equal(t, []blocks.Block{other}, recv(t, last).Blocks)
				require.NoError(t, n.Close())
			})
		})
	}
}
