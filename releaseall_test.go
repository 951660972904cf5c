package notifier

// ReleaseAll against the other ends of a subscription: each key is reported
// to the cancel function once, by whichever end takes effect.

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ReleaseAll and Remove race, both behind a stalled Publish of one of s's
// keys. Whichever close wins, each key whose last want ends reaches the
// cancel function exactly once, and ReleaseAll returns those keys only if it
// won (review: no key is lost when ReleaseAll loses and returns nil).
func TestReleaseAll_LosingARaceLosesNoCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st)
		b := mkBlocks("releaseall-race", 3)
		k := keysOf(b)
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, k...))
		release, published := st.publishStalled(t, n, b[0]) // reserves k[0]
		rel, rem := make(chan []cid.Cid, 1), make(chan struct{})
		go func() { rel <- s.ReleaseAll() }()
		go func() { s.Remove(); close(rem) }()
		synctest.Wait()
		release()
		require.NoError(t, <-published)
		<-rem
		got := <-rel
		require.Equal(t, sorted(k...), cancels.take(), "each key's last want, once")
		if got != nil {
			require.Equal(t, sorted(k[1:]...), sorted(got...), "ReleaseAll won: the keys it ended (k[0] was delivered)")
		}
		requireIndexEmpty(t, n)
	})
}

// gateSpan is a recording span whose AddEvent, which an operation calls from
// its observe hook once it holds no lock and before it goes back to the pool
// (putOp, which resumes the pending closes it held up), waits for gate.
type gateSpan struct {
	trace.Span
	in, gate chan struct{}
}

func (g *gateSpan) IsRecording() bool { return true }

func (g *gateSpan) AddEvent(string, ...trace.EventOption) {
	close(g.in)
	<-g.gate
}

// publishGated starts a Publish of blk whose PutMany stalls in st until
// release is called, and whose observe hook then waits in span (span.in
// closes when it gets there; close span.gate to let it go on). It returns
// once the PutMany has begun, blk's key reserved. published receives
// Publish's error.
func publishGated(t *testing.T, n *Notifier, st *stallStore, blk blocks.Block) (release func(), span *gateSpan, published chan error) {
	t.Helper()
	span = &gateSpan{Span: noop.Span{}, in: make(chan struct{}), gate: make(chan struct{})}
	release = st.stall(t, blk.Cid())
	published = make(chan error, 1)
	go func() {
		pctx := trace.ContextWithSpan(context.Background(), span)
		published <- n.Publish(pctx, ResponseMessage{Blocks: []blocks.Block{blk}})
	}()
	require.Equal(t, blk.Cid(), <-st.entered)
	return release, span, published
}

// A ReleaseAll that waits behind a slow-consumer end, pending behind a
// stalled Publish, may be woken by that Publish's delivery before the
// Publish resumes the end, and finish the end itself. It still returns nil,
// as its doc says of a call made while another end is under way; the keys go
// to the cancel function once each. (Found by review: it returned the keys.)
// The Publish is held in its observe hook, after its locks and before putOp,
// so ReleaseAll always wins that race here.
func TestReleaseAll_FinishingAPendingSlowEndReportsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st, WithBufferSize(0), WithMaxPending(1))
		b := mkBlocks("releaseall-pending", 3)
		k := keysOf(b)
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, k...))

		release, span, published := publishGated(t, n, st, b[0]) // reserves k[0], in its PutMany

		for range 3 { // nobody reads s: the third overflows it
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: k[1:2]}))
		}
		synctest.Wait()
		require.NoError(t, s.Err(), "the slow-consumer end is pending behind the stalled Publish")
		require.True(t, n.Wanted(k[1]))

		rel := make(chan []cid.Cid, 1)
		go func() { rel <- s.ReleaseAll() }()
		synctest.Wait()
		require.False(t, returned(rel), "ReleaseAll waits behind the pending end")

		release()
		<-span.in // the Publish has delivered k[0] and released its locks; the pending end is not resumed yet
		synctest.Wait()
		require.True(t, returned(rel), "ReleaseAll, woken by the delivery, ended s itself")
		close(span.gate)
		require.NoError(t, <-published)
		require.Nil(t, <-rel, "an end was under way when ReleaseAll began")
		require.ErrorIs(t, s.Err(), ErrSlowConsumer)
		require.Equal(t, sorted(k...), cancels.take(), "each key's last want reaches the cancel function once")
		requireIndexEmpty(t, n)
	})
}

// A ReleaseAll that is the only end ever begun on s, waiting behind a
// stalled Publish of one of its keys, still reports the keys whose last want
// it ends: for a channel subscription (with WithMaxPending set but never
// exceeded), an interest subscription, a request and a function
// subscription; with and without a cancel function. (Review of the fix
// above: it must not make a lone ReleaseAll report nothing.)
func TestReleaseAll_AloneBehindAStallReportsItsKeys(t *testing.T) {
	kinds := []string{"channel", "interest", "request", "func"}
	for _, kind := range kinds {
		for _, withCancel := range []bool{false, true} {
			name := kind
			if withCancel {
				name += "/cancel"
			}
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					st := newStallStore()
					n, cancels := newWithCancelsIf(t, withCancel, st, WithBufferSize(16), WithMaxPending(4))
					b := mkBlocks("releaseall-lone-"+name, 3)
					k := keysOf(b)
					s := newOfKind(t, n, kind)
					require.NoError(t, s.Subscribe(ctx, k...))
					release, published := st.publishStalled(t, n, b[0])
					rel := releaseAllAsleep(t, s)
					release()
					require.NoError(t, <-published)
					got := <-rel
					want := k[1:] // k[0]'s want ended by delivery
					if kind == "interest" {
						want = k // an interest outlives delivery
					}
					require.Equal(t, sorted(want...), sortedOrNil(got), "the only end ever begun on s reports its keys")
					if withCancel {
						c := cancels.take()
						if kind != "interest" {
							require.Equal(t, sorted(k...), c)
						}
					}
					require.NoError(t, s.Err())
					require.Nil(t, s.ReleaseAll(), "second call")
					requireIndexEmpty(t, n)
				})
			})
		}
	}
}

// newWithCancelsIf returns a Notifier on bs with opts, closed when the test
// ends, whose cancels are recorded if withCancel (cancels is nil if not).
func newWithCancelsIf(t *testing.T, withCancel bool, bs Blockstore, opts ...Option) (n *Notifier, cancels *cancelLog) {
	t.Helper()
	if withCancel {
		n, cancels = newWithCancels(t, bs, opts...)
	} else {
		n = New(bs, opts...)
		t.Cleanup(func() { require.NoError(t, n.Close()) })
	}
	return n, cancels
}

// newOfKind returns a new subscription of n of the kind named: "channel",
// "interest", "request" or "func".
func newOfKind(t *testing.T, n *Notifier, kind string) *Subscription {
	t.Helper()
	var s *Subscription
	var err error
	switch kind {
	case "channel":
		s, err = n.NewSubscription(1)
	case "interest":
		s, err = n.NewInterest(1)
	case "request":
		s, err = n.NewRequest(nil)
	case "func":
		s, err = n.NewSubscriptionFunc(1, func(ResponseMessage) {})
	}
	require.NoError(t, err)
	return s
}

// releaseAllAsleep starts s.ReleaseAll() and checks, once the bubble has
// settled, that it waits behind the stalled Publish; the channel returned
// gets what it returns.
func releaseAllAsleep(t *testing.T, s *Subscription) chan []cid.Cid {
	t.Helper()
	rel := make(chan []cid.Cid, 1)
	go func() { rel <- s.ReleaseAll() }()
	synctest.Wait()
	require.False(t, returned(rel), "ReleaseAll waits behind the stalled Publish")
	return rel
}

// ReleaseAll begins first; an overflow (a slow-consumer end) begins only
// while it waits; the Publish that holds the key up is gated before putOp,
// so ReleaseAll, woken by the delivery, ends s. It was the first end to
// begin and the one that ended s: it reports k[1], k[2]. The counterpart of
// TestReleaseAll_FinishingAPendingSlowEndReportsNothing (review).
func TestReleaseAll_FirstThenAnOverflowReportsItsKeys(t *testing.T) {
	for _, withCancel := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocancel", true: "cancel"}[withCancel], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newStallStore()
				n, cancels := newWithCancelsIf(t, withCancel, st, WithBufferSize(0), WithMaxPending(1))
				b := mkBlocks("releaseall-first-then-overflow", 3)
				k := keysOf(b)
				s := mustSub(t, n, 1)
				require.NoError(t, s.Subscribe(ctx, k...))

				release, span, published := publishGated(t, n, st, b[0])

				rel := releaseAllAsleep(t, s)

				for range 3 { // the third overflows s: a slow end begins after ReleaseAll
					require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: k[1:2]}))
				}
				synctest.Wait()
				require.NoError(t, s.Err(), "the slow end is pending")

				release()
				<-span.in
				synctest.Wait()
				require.True(t, returned(rel), "ReleaseAll, woken by the delivery, ended s")
				close(span.gate)
				require.NoError(t, <-published)
				require.Equal(t, sorted(k[1:]...), sortedOrNil(<-rel), "first to begin, and it ended s")
				require.ErrorIs(t, s.Err(), ErrSlowConsumer)
				if withCancel {
					require.Equal(t, sorted(k...), cancels.take())
				}
				requireIndexEmpty(t, n)
			})
		})
	}
}

// A ReleaseAll that begins while a Remove of the same subscription waits
// behind a stalled Publish returns nil, whichever of the two ends s: the
// Remove was under way first. Each key reaches the cancel function once.
func TestReleaseAll_BehindAWaitingRemoveReportsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st)
		b := mkBlocks("releaseall-behind-remove", 3)
		k := keysOf(b)
		s := mustSub(t, n, 1)
		require.NoError(t, s.Subscribe(ctx, k...))
		release, published := st.publishStalled(t, n, b[0]) // reserves k[0]
		rem := make(chan struct{})
		go func() { s.Remove(); close(rem) }()
		synctest.Wait() // the Remove waits for k[0]
		rel := make(chan []cid.Cid, 1)
		go func() { rel <- s.ReleaseAll() }()
		synctest.Wait()
		require.False(t, returned(rel))
		release()
		require.NoError(t, <-published)
		<-rem
		require.Nil(t, <-rel, "a Remove was under way when ReleaseAll began")
		require.Equal(t, sorted(k...), cancels.take(), "each key's last want, once")
		requireIndexEmpty(t, n)
	})
}

// A ReleaseAll that begins once Close has begun returns nil, also for a
// subscription that Close has not reached yet and that the ReleaseAll ends
// itself. Close ends two subscriptions one after the other, the first
// waiting behind a stalled Publish of a key both want; ReleaseAll is called
// on both, so one of them is the subscription Close has not reached.
func TestReleaseAll_OnceCloseHasBegunReportsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st)
		b := mkBlocks("releaseall-close", 3)
		k := keysOf(b)
		s1, s2 := mustSub(t, n, 1), mustSub(t, n, 2)
		require.NoError(t, s1.Subscribe(ctx, k[0], k[1]))
		require.NoError(t, s2.Subscribe(ctx, k[0], k[2]))
		release, published := st.publishStalled(t, n, b[0]) // reserves k[0]
		closed := make(chan struct{})
		go func() { require.NoError(t, n.Close()); close(closed) }()
		synctest.Wait() // Close waits for k[0] with its first subscription
		rel1, rel2 := make(chan []cid.Cid, 1), make(chan []cid.Cid, 1)
		go func() { rel1 <- s1.ReleaseAll() }()
		go func() { rel2 <- s2.ReleaseAll() }()
		synctest.Wait()
		release()
		require.NoError(t, <-published)
		<-closed
		require.Nil(t, <-rel1, "Close had begun")
		require.Nil(t, <-rel2, "Close had begun")
		// k[0] ends by delivery or with Close, as the stalled Publish and
		// Close order; either way each key reaches the cancel function at
		// most once, and k[1] and k[2] do.
		got := cancels.take()
		require.Subset(t, got, k[1:])
		require.Subset(t, k, got)
		require.Len(t, got, len(slices.Compact(sorted(got...))), "no key twice")
	})
}

// Without WithCancelFunc, the keys of a subscription ended as a slow consumer
// are reported to nobody: ReleaseAll afterwards returns nil, as its doc and
// WithMaxPending's say.
func TestReleaseAll_AfterAnotherEndReportsNothing(t *testing.T) {
	n := New(memStore(), WithBufferSize(0), WithMaxPending(1))
	t.Cleanup(func() { _ = n.Close() })
	k := keysOf(mkBlocks("releaseall-slow", 3))
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, k...))
	for range 3 { // nobody reads: the backlog overflows and the Publish ends s
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: k[:1]}))
	}
	require.ErrorIs(t, s.Err(), ErrSlowConsumer)
	require.False(t, n.Wanted(k[2]), "the want of k[2] ended with s")
	require.Nil(t, s.ReleaseAll())
}
