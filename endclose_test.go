package notifier

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// These tests check that a subscription's end is one instant for an
// observer: once Wants reports that the end has ended its wants, Messages()
// is closed, with at most what its buffer held before it. They make the
// subscription's drain goroutine busy (a consumer that does not read, a
// backlog behind a full buffer) so that it holds a message for the channel
// as the end comes, then spin on Wants until the end is seen and look at the
// channel without blocking: it must give up its buffered messages and then
// report closed, never nothing. Before the end closed the channel itself
// (the drain goroutine closed it, after the end had released its locks),
// each failed within a few rounds here (2 cores, with and without -race),
// but only when the reader looked in a gap of a few microseconds: on a busy
// machine all three once passed 200 rounds of it. So
// TestEnd_MessagesClosedWhenTheCancelFunctionRuns looks from inside the end,
// on one processor, and fails every time.
const endCloseRounds = 200

// endRound sets up one round: a subscription x with a buffer of one that
// wants k and is sent HAVEs of k (which end no want) until its drain
// goroutine holds one for the channel and more wait in the backlog.
func endRound(t *testing.T, opts ...Option) (n *Notifier, x *Subscription, k cid.Cid) {
	t.Helper()
	n = New(nil, append([]Option{WithBufferSize(1)}, opts...)...)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	k = mkBlocks("end-close", 1)[0].Cid()
	x = mustSub(t, n, 1)
	require.NoError(t, x.Subscribe(ctx, k))
	have := func() { require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{k}})) }
	have() // into the buffer
	have() // into the backlog: a drain goroutine starts
	// Wait for the goroutine to take it, so that it holds one, blocked on
	// the full channel, and the next waits behind it: with WithMaxPending(1)
	// that next one must not overflow x yet.
	for deadline := time.Now().Add(hang); ; runtime.Gosched() {
		x.mu.Lock()
		held := x.backlog.Len() == 0
		x.mu.Unlock()
		if held {
			break
		}
		require.True(t, time.Now().Before(deadline), "the drain goroutine never took its message")
	}
	have() // into the backlog
	require.NoError(t, x.Err(), "x ended while being set up")
	return n, x, k
}

// closedOnceSeen spins on x.Wants(k) until it is false, then reports
// whether Messages() is closed behind what its buffer holds.
func closedOnceSeen(x *Subscription, k cid.Cid) bool {
	for x.Wants(k) {
	}
	return closedBehindBuffer(x)
}

func TestEnd_RemoveClosesMessagesWithItsWants(t *testing.T) {
	for range endCloseRounds {
		_, x, k := endRound(t)
		removed := make(chan struct{})
		go func() {
			defer close(removed)
			x.Remove()
		}()
		closed := closedOnceSeen(x, k)
		<-removed
		require.True(t, closed, "x.Wants(k) is false after Remove began, but Messages() is still open and empty")
		require.NoError(t, x.Err())
	}
}

func TestEnd_CloseClosesMessagesWithItsWants(t *testing.T) {
	for range endCloseRounds {
		n, x, k := endRound(t)
		closedN := make(chan error, 1)
		go func() { closedN <- n.Close() }()
		closed := closedOnceSeen(x, k)
		require.NoError(t, <-closedN)
		require.True(t, closed, "x.Wants(k) is false after Close began, but Messages() is still open and empty")
		require.ErrorIs(t, x.Err(), ErrClosed)
	}
}

// The end of a slow consumer: the Publish that overflows WithMaxPending
// ends x.
func TestEnd_SlowConsumerEndClosesMessagesWithItsWants(t *testing.T) {
	for range endCloseRounds {
		n, x, k := endRound(t, WithMaxPending(1))
		published := make(chan error, 1)
		go func() {
			published <- n.Publish(context.Background(), ResponseMessage{From: "peer", Haves: []cid.Cid{k}})
		}()
		closed := closedOnceSeen(x, k)
		require.NoError(t, <-published)
		require.True(t, closed, "x.Wants(k) is false after its end as a slow consumer, but Messages() is still open and empty")
		require.ErrorIs(t, x.Err(), ErrSlowConsumer)
	}
}

// The same three ends, made deterministic: one processor (GOMAXPROCS 1), and
// the look at the channel is taken from the cancel function, which the end
// calls under its locks once it has ended x's want of k (G5). Nothing else
// can run meanwhile: the drain goroutine that the end stopped, and anything
// it would start, wait for the one processor until the end blocks or
// returns. So Messages() must be closed by then, by the end itself; an end
// that left the close to the drain goroutine fails every time here, not
// only when a reader on another processor happens to look in the gap.
func TestEnd_MessagesClosedWhenTheCancelFunctionRuns(t *testing.T) {
	ends := []struct {
		name string
		opts []Option
		end  func(n *Notifier, x *Subscription, k cid.Cid) error
		err  error
	}{
		{"Remove", nil, func(_ *Notifier, x *Subscription, _ cid.Cid) error { x.Remove(); return nil }, nil},
		{"Close", nil, func(n *Notifier, _ *Subscription, _ cid.Cid) error { return n.Close() }, ErrClosed},
		{"SlowConsumer", []Option{WithMaxPending(1)}, func(n *Notifier, _ *Subscription, k cid.Cid) error {
			return n.Publish(context.Background(), ResponseMessage{From: "peer", Haves: []cid.Cid{k}})
		}, ErrSlowConsumer},
	}
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			var x *Subscription
			var calls int
			var closed bool
			cancel := func([]cid.Cid) {
				calls++ // the end runs on this test's goroutine
				closed = closedBehindBuffer(x)
			}
			var n *Notifier
			var k cid.Cid
			n, x, k = endRound(t, append([]Option{WithCancelFunc(cancel)}, e.opts...)...)
			require.Zero(t, calls, "the set-up ended a want")
			require.NoError(t, e.end(n, x, k))
			require.Equal(t, 1, calls, "the end did not report k's last want to the cancel function")
			require.True(t, closed, "the cancel function ran with x's want of k ended, but Messages() still open and empty")
			require.ErrorIs(t, x.Err(), e.err)
		})
	}
}

// A block of k ends x's want by delivery, not x: Messages() stays open.
// The control: closedBehindBuffer does not report closed for a want that
// ended without an end of x.
func TestEnd_DeliveryLeavesMessagesOpen(t *testing.T) {
	_, x, k := endRound(t)
	b := blocks.NewBlock([]byte("end-close-other"))
	require.NoError(t, x.Subscribe(ctx, b.Cid()))
	published := make(chan error, 1)
	go func() { published <- x.n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}) }()
	for x.Wants(b.Cid()) {
	}
	require.NoError(t, <-published)
	require.True(t, x.Wants(k))
	require.False(t, closedBehindBuffer(x), "a delivery closed Messages()")
}

// closedBehindBuffer reports whether Messages() is closed behind what its
// buffer holds, reading without blocking.
func closedBehindBuffer(x *Subscription) bool {
	for {
		select {
		case _, ok := <-x.Messages():
			if !ok {
				return true
			}
		default:
			return false
		}
	}
}

// An end that takes no shard lock (closeIdle: x wants nothing, its last
// want unsubscribed), seen through Err: once Err says ErrClosed, Messages()
// is closed behind its buffer. (From a review.)
func TestEnd_IdleCloseClosesMessagesWithErr(t *testing.T) {
	for range endCloseRounds {
		n, x, k := endRound(t)
		x.Unsubscribe(k) // x wants nothing: Close ends it in closeIdle, under x.mu alone
		closedN := make(chan error, 1)
		go func() { closedN <- n.Close() }()
		for x.Err() == nil {
		}
		closed := closedBehindBuffer(x)
		require.NoError(t, <-closedN)
		require.True(t, closed, "x.Err() is ErrClosed, but Messages() is still open and empty")
	}
}

// Remove seen by a reader under the subscription's lock alone
// (AppendWanted): once the wants are gone, Messages() is closed behind its
// buffer. (From a review.)
func TestEnd_AppendWantedSeesTheEndWithMessagesClosed(t *testing.T) {
	for range endCloseRounds {
		_, x, k := endRound(t)
		removed := make(chan struct{})
		go func() { defer close(removed); x.Remove() }()
		for len(x.AppendWanted(nil, []cid.Cid{k})) > 0 {
		}
		closed := closedBehindBuffer(x)
		<-removed
		require.True(t, closed, "AppendWanted saw the wants gone, but Messages() is still open and empty")
	}
}

// Drain goroutines that empty the backlog, exit and start again (a reader
// that reads in bursts) race a publisher, slow-consumer ends, two Removes
// or a Remove and Close. Nothing panics (a send on or a close of a closed
// channel), the race detector stays quiet, every end returns with the drain
// goroutine gone, and an observer of Wants finds Messages() closed behind
// its buffer once the wants are gone. (From a review.)
func TestEnd_StressEndsAgainstRestartingDrains(t *testing.T) {
	const rounds = 150
	for r := range rounds {
		rng := rand.New(rand.NewPCG(uint64(r), 7))
		n, x, k := stressSub(t, rng)

		burst := 1 + rng.IntN(3)
		closeSecond := rng.IntN(2) == 0
		var wg sync.WaitGroup
		stop := make(chan struct{})
		startPublisherAndBurstReader(t, &wg, stop, n, x, k, burst)
		closedSeen := make(chan bool, 1)
		go func() { closedSeen <- closedOnceSeen(x, k) }()

		endTwiceAtOnce(t, n, x, closeSecond)
		x.mu.Lock()
		draining := x.draining
		x.mu.Unlock()
		require.False(t, draining, "round %d: an end returned while the drain goroutine still ran", r)
		close(stop)
		wg.Wait()
		// The observer races the reader for buffered messages, but out is
		// closed before Wants can say false, so it finds it closed.
		require.True(t, <-closedSeen, "round %d: the wants are gone, but Messages() is open and empty", r)
		require.NoError(t, n.Close())
	}
}

// stressSub makes a round's Notifier, with a buffer of 0 to 2 and, in half
// the rounds, a WithMaxPending of 1 to 4 (drawn from rng), and a
// subscription x of it that wants k.
func stressSub(t *testing.T, rng *rand.Rand) (n *Notifier, x *Subscription, k cid.Cid) {
	t.Helper()
	opts := []Option{WithBufferSize(rng.IntN(3))}
	if rng.IntN(2) == 0 {
		opts = append(opts, WithMaxPending(1+rng.IntN(4)))
	}
	n = New(nil, opts...)
	k = mkBlocks("end-stress", 1)[0].Cid()
	x = mustSub(t, n, 1)
	require.NoError(t, x.Subscribe(ctx, k))
	return n, x, k
}

// startPublisherAndBurstReader starts, on wg, a publisher of HAVEs of k and
// a reader of x that reads burst more messages after each one it waits for,
// so that x's drain goroutine empties the backlog, exits and starts again;
// both run until stop is closed (the reader also until Messages() closes).
func startPublisherAndBurstReader(t *testing.T, wg *sync.WaitGroup, stop chan struct{}, n *Notifier, x *Subscription, k cid.Cid, burst int) {
	t.Helper()
	wg.Add(2)
	go func() { // publisher
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = n.Publish(context.Background(), ResponseMessage{From: "peer", Haves: []cid.Cid{k}})
		}
	}()
	go func() { // reader in bursts
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case _, ok := <-x.Messages():
				if !ok {
					return
				}
			}
			for range burst {
				select {
				case <-x.Messages():
				default:
				}
			}
		}
	}()
}

// endTwiceAtOnce ends x from two goroutines at once, a Remove and either a
// second Remove or n.Close (closeSecond), and returns once both have returned.
func endTwiceAtOnce(t *testing.T, n *Notifier, x *Subscription, closeSecond bool) {
	t.Helper()
	var ends sync.WaitGroup
	ends.Add(2)
	go func() { defer ends.Done(); x.Remove() }()
	go func() {
		defer ends.Done()
		if closeSecond {
			_ = n.Close()
		} else {
			x.Remove()
		}
	}()
	ends.Wait()
}
