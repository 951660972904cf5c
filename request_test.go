package notifier

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Requests (NewRequest): subscriptions without a session ID.

// Any number of requests live at once, each with ID 0, beside a session whose
// ID is 0, whichever registered first; they never collide with a session.
func TestRequest_HasNoSessionID(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	var reqs []*Subscription
	for range 500 {
		r := mustRequest(t, n, nil)
		require.Zero(t, r.ID())
		reqs = append(reqs, r)
	}
	s0 := mustSub(t, n, 0)
	_, err := n.NewInterest(0)
	require.ErrorIs(t, err, ErrDuplicateSession, "sessions still collide with each other")
	for range 500 {
		reqs = append(reqs, mustRequest(t, n, nil))
	}
	require.Equal(t, 1001, n.Stats().Subscriptions)

	s0.Remove()
	in0 := mustInterest(t, n, 0) // beside an interest with ID 0, too
	reqs = append(reqs, mustRequest(t, n, nil))
	require.Equal(t, 1002, n.Stats().Subscriptions)
	in0.Remove()
	for _, r := range reqs {
		r.Remove()
	}
	require.Equal(t, Stats{}, n.Stats())
	require.Empty(t, n.requests)
	require.Empty(t, n.sessions)
}

// A request takes its messages through its function, as NewSubscriptionFunc
// does: HAVEs, blocks (which end its wants) and stored blocks found by its
// Subscribe; Messages() is a done signal.
func TestRequest_DeliversThroughFunc(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("request-func", 2)
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[:1]})) // stored
	got := &msgLog{}
	r := mustRequest(t, n, got.record)
	require.NoError(t, r.Subscribe(ctx, keysOf(b)...))
	require.Equal(t, []ResponseMessage{{Blocks: b[:1]}}, got.take(), "delivered before Subscribe returns")
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: keysOf(b)}))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[1:]}))
	require.Equal(t, []ResponseMessage{
		{From: "p", Haves: keysOf(b[1:])},
		{From: "p", Blocks: []blocks.Block{b[1]}},
	}, got.take())
	require.False(t, r.Wants(b[1].Cid()))
	require.Equal(t, []cid.Cid{b[1].Cid()}, cancels.take())
	openAndEmpty(t, r)
	require.Zero(t, cap(r.Messages()))
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
}

// Remove unregisters a request and only that one; Remove is idempotent.
func TestRequest_RemoveUnregisters(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("request-remove", 2)
	r1, r2 := mustRequest(t, n, nil), mustRequest(t, n, nil)
	require.NoError(t, r1.Subscribe(ctx, b[0].Cid()))
	require.NoError(t, r2.Subscribe(ctx, keysOf(b)...))
	require.Equal(t, Stats{Subscriptions: 2, Keys: 2, Wants: 3}, n.Stats())

	r1.Remove()
	r1.Remove()
	closedNow(t, r1)
	require.NoError(t, r1.Err())
	require.Equal(t, Stats{Subscriptions: 1, Keys: 2, Wants: 2}, n.Stats())
	require.Empty(t, cancels.take(), "r2 still wants both keys")
	openAndEmpty(t, r2)
	require.True(t, r2.Wants(b[0].Cid()))

	require.Equal(t, sorted(keysOf(b)...), sortedOrNil(r2.ReleaseAll()))
	require.Equal(t, sorted(keysOf(b)...), cancels.take())
	r2.Remove()
	require.Equal(t, Stats{}, n.Stats())
	require.Empty(t, n.requests)
	require.ErrorIs(t, r2.Subscribe(ctx, b[0].Cid()), ErrClosed)
}

// Close ends every request: Messages() closed, Err() ErrClosed, no count
// left; NewRequest then returns ErrClosed, with a function or without.
func TestRequest_EndedByClose(t *testing.T) {
	cancels := &cancelLog{}
	n := New(memStore(), WithCancelFunc(cancels.record))
	b := mkBlocks("request-close", 3)
	var reqs []*Subscription
	for i := range b {
		r := mustRequest(t, n, nil)
		require.NoError(t, r.Subscribe(ctx, b[i].Cid()))
		reqs = append(reqs, r)
	}
	require.Equal(t, Stats{Subscriptions: 3, Keys: 3, Wants: 3}, n.Stats())
	require.NoError(t, n.Close())
	for _, r := range reqs {
		closedNow(t, r)
		require.ErrorIs(t, r.Err(), ErrClosed)
	}
	require.Equal(t, sorted(keysOf(b)...), cancels.take())
	requireIndexEmpty(t, n)
	_, err := n.NewRequest(nil)
	require.ErrorIs(t, err, ErrClosed)
	_, err = n.NewRequest(func(ResponseMessage) {}) // with a function too (g7-newrequest-func-after-close)
	require.ErrorIs(t, err, ErrClosed)
}

// Requests created, used and removed from many goroutines while Close runs:
// every request that NewRequest returned is ended once Close has returned
// (Messages() closed; Err() ErrClosed unless its goroutine removed it
// first), NewRequest fails only with ErrClosed, and no goroutine is left.
func TestRequest_ConcurrentWithClose(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	for round := range 20 {
		n := New(memStore(), WithCancelFunc(func([]cid.Cid) {}))
		b := mkBlocks("request-race", 8)
		started := make(chan struct{}, 8)
		results := make([][]requestRun, 8)
		var wg sync.WaitGroup
		for g := range results {
			wg.Go(func() { results[g] = requestsUntilClosed(n, b, g, started) })
		}
		for range results {
			done(t, started, "goroutine started") // every goroutine has a live request before Close
		}
		require.NoError(t, n.Close())
		wg.Wait()
		total := 0
		for g, runs := range results {
			for i, run := range runs {
				require.NoError(t, run.err, "round %d, goroutine %d, request %d", round, g, i)
				closedNow(t, run.r)
				if run.removed { // by Remove (nil), unless Close came first
					if err := run.r.Err(); err != nil {
						require.ErrorIs(t, err, ErrClosed)
					}
				} else {
					require.ErrorIs(t, run.r.Err(), ErrClosed)
				}
			}
			total += len(runs)
		}
		require.GreaterOrEqual(t, total, len(results))
		requireIndexEmpty(t, n)
		require.Empty(t, n.requests)
	}
	require.NoError(t, goleak.Find(append(leakOpts, baseline)...))
}

// requestRun is one request of requestsUntilClosed.
type requestRun struct {
	r       *Subscription
	removed bool  // its goroutine removed it
	err     error // an unexpected error of its operations
}

// requestsUntilClosed creates requests that subscribe to keys of b and
// publish them, removing some, until the Notifier is closed. It signals
// started once, when it has a live request or when it gives up.
func requestsUntilClosed(n *Notifier, b []blocks.Block, g int, started chan<- struct{}) []requestRun {
	signal := sync.OnceFunc(func() { started <- struct{}{} })
	defer signal()
	var runs []requestRun
	for i := 0; ; i++ {
		r, err := n.NewRequest(func(ResponseMessage) {})
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				runs = append(runs, requestRun{err: err})
			}
			return runs
		}
		run := requestRun{r: r}
		signal()
		k := b[(g+i)%len(b)]
		if err := r.Subscribe(ctx, k.Cid(), b[g].Cid()); err != nil && !errors.Is(err, ErrClosed) {
			run.err = err
		}
		if err := n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{k}}); err != nil && !errors.Is(err, ErrClosed) {
			run.err = err
		}
		if i%3 == 0 {
			r.Remove()
			run.removed = true
		}
		runs = append(runs, run)
	}
}

// The done signal of a subscription without a channel (NewRequest,
// NewSubscriptionFunc, NewInterest) is made on the first call of Messages():
// whenever it is asked for, before, during or after the close, every call
// returns the same channel, and it is closed exactly when the subscription
// is.
func TestDoneSignal_MadeOnDemandClosedWithTheSubscription(t *testing.T) {
	n, _ := newWithCancels(t, nil)
	t.Run("asked before the close", func(t *testing.T) {
		s, err := n.NewRequest(nil)
		require.NoError(t, err)
		ch := s.Messages()
		require.True(t, doneSignalOpen(t, ch))
		require.Equal(t, ch, s.Messages(), "the same channel every time")
		s.Remove()
		require.False(t, doneSignalOpen(t, ch))
		require.Equal(t, ch, s.Messages())
	})
	t.Run("first asked after the close", func(t *testing.T) {
		s, err := n.NewSubscriptionFunc(7, nil)
		require.NoError(t, err)
		s.Remove()
		require.False(t, doneSignalOpen(t, s.Messages()))
	})
	t.Run("asked during the close", func(t *testing.T) {
		for range 300 {
			s, err := n.NewInterest(8)
			require.NoError(t, err)
			var wg sync.WaitGroup
			got := make([]<-chan ResponseMessage, 2)
			start := make(chan struct{})
			for i := range got {
				wg.Add(1)
				go func() { defer wg.Done(); <-start; got[i] = s.Messages() }()
			}
			wg.Add(1)
			go func() { defer wg.Done(); <-start; s.Remove() }()
			close(start)
			wg.Wait()
			require.Equal(t, got[0], got[1], "every call returns the same channel")
			require.False(t, doneSignalOpen(t, got[0]), "closed once Remove has returned")
		}
	})
}

// doneSignalOpen reports whether the done signal ch is still open, checking
// that a closed one yields no message.
func doneSignalOpen(t *testing.T, ch <-chan ResponseMessage) bool {
	t.Helper()
	select {
	case _, ok := <-ch:
		require.False(t, ok, "a done signal yields no message")
		return false
	default:
		return true
	}
}

// A request enters the registry only when Close would have work for it: a
// want (one-key or general path) or a done signal. One that only found its
// block never does, and Close still ends it: Err() ErrClosed, Messages()
// closed, Subscribe refused, a later Remove keeps ErrClosed, and Stats counts
// it while it lives and not after Close.
func TestRequest_ListedOnlyWhenCloseHasWorkForIt(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("request-listed", 4)
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[:1]})) // stored
	got := &msgLog{}
	hit := mustRequest(t, n, got.record)
	require.NoError(t, hit.Subscribe(ctx, b[0].Cid()))
	require.Equal(t, []ResponseMessage{{Blocks: b[:1]}}, got.take())
	idle := mustRequest(t, n, nil)
	late := mustRequest(t, n, nil) // touched after Close by Remove alone
	require.Empty(t, n.requests, "a request with nothing for Close to do is not listed")
	require.Equal(t, Stats{Subscriptions: 3}, n.Stats(), "yet it is counted")

	one := mustRequest(t, n, nil)
	require.NoError(t, one.Subscribe(ctx, b[1].Cid())) // one key, missing: subscribeOne's commitWant
	two := mustRequest(t, n, nil)
	require.NoError(t, two.Subscribe(ctx, keysOf(b[2:])...)) // the general path's want
	watched := mustRequest(t, n, nil)
	signal := watched.Messages()
	require.ElementsMatch(t, []*Subscription{one, two, watched}, slices.Collect(maps.Keys(n.requests)))
	require.Equal(t, Stats{Subscriptions: 6, Keys: 3, Wants: 3}, n.Stats())

	idle.Remove()
	require.NoError(t, idle.Err(), "removed before Close")
	require.Equal(t, Stats{Subscriptions: 5, Keys: 3, Wants: 3}, n.Stats())

	require.NoError(t, n.Close())
	require.Equal(t, sorted(keysOf(b[1:])...), cancels.take())
	requireIndexEmpty(t, n) // Stats{} too: the unlisted hit counts no more
	require.Empty(t, n.requests)
	_, open := <-signal
	require.False(t, open, "Close closes a done signal made before it")
	for _, r := range []*Subscription{hit, one, two, watched} {
		require.ErrorIs(t, r.Err(), ErrClosed)
		closedNow(t, r)
		require.ErrorIs(t, r.Subscribe(ctx, b[3].Cid()), ErrClosed)
	}
	late.Remove()
	require.ErrorIs(t, late.Err(), ErrClosed, "Close came first")
	closedNow(t, late)
	require.NoError(t, idle.Err())
	require.Empty(t, got.take())
	require.Equal(t, Stats{}, n.Stats())
}

// Close begins while an unlisted request's one-key Subscribe is in its Get:
// a miss may not record its want (Close has collected the registry without
// it; the want would outlive Close), and a hit may not be delivered (Err()
// already says ErrClosed). Either Subscribe returns ErrClosed and leaves
// nothing behind.
func TestRequest_OneKeySubscribeDuringCloseCommitsNothing(t *testing.T) {
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprintf("stored=%v", stored), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ps := newParkStore(1, 0)
				n, cancels := newWithCancels(t, ps)
				b := mkBlocks("request-during-close", 1)[0]
				if stored {
					require.NoError(t, ps.Blockstore.PutMany(ctx, []blocks.Block{b}))
				}
				got := &msgLog{}
				r := mustRequest(t, n, got.record)
				sub, closed := make(chan error, 1), make(chan error, 1)
				go func() { sub <- r.Subscribe(ctx, b.Cid()) }()
				synctest.Wait() // parked in its Get
				go func() { closed <- n.Close() }()
				synctest.Wait() // Close waits for the Get
				require.False(t, returned(closed))
				require.ErrorIs(t, r.Err(), ErrClosed, "Close has begun")
				ps.getRel <- struct{}{}
				synctest.Wait()
				require.NoError(t, <-closed)
				require.ErrorIs(t, <-sub, ErrClosed)
				require.Empty(t, got.take(), "nothing delivered after Err() said ErrClosed")
				require.Empty(t, cancels.take())
				requireIndexEmpty(t, n)
				require.Empty(t, n.requests)
				require.ErrorIs(t, r.Err(), ErrClosed)
				closedNow(t, r)
			})
		})
	}
}

// A goroutine waiting on Messages() of a request that wants nothing is woken
// by Close, and by Remove.
func TestRequest_DoneSignalOfAnIdleRequestWakesItsWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, _ := newWithCancels(t, nil)
		r1, r2 := mustRequest(t, n, nil), mustRequest(t, n, nil)
		woken := make(chan int, 2)
		for i, r := range []*Subscription{r1, r2} {
			go func() {
				for range r.Messages() {
				}
				woken <- i
			}()
		}
		synctest.Wait()
		require.Empty(t, woken)
		r1.Remove()
		synctest.Wait()
		require.Equal(t, 0, <-woken)
		require.NoError(t, n.Close())
		synctest.Wait()
		require.Equal(t, 1, <-woken)
		require.ErrorIs(t, r2.Err(), ErrClosed)
	})
}

// Messages() racing Remove of a request not listed yet: doneSignal has found
// no signal and waits for the request's lock while Remove, ahead of it,
// closes the request. The request must not be listed then (it would stay in
// the registry until Close), nor counted off twice: Stats stays exact, also
// after a second Remove.
func TestRequest_MessagesRacingRemoveListsNothing(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	r := mustRequest(t, n, nil)
	r.mu.Lock()
	removed, signal := make(chan struct{}), make(chan (<-chan ResponseMessage), 1)
	go func() { r.Remove(); close(removed) }()
	waitWaiters(t, &r.mu, 1) // the Remove's closeIdle
	go func() { signal <- r.Messages() }()
	waitWaiters(t, &r.mu, 2) // and doneSignal, behind it
	r.mu.Unlock()
	<-removed
	_, open := <-<-signal
	require.False(t, open)
	require.NoError(t, r.Err())
	require.Empty(t, n.requests, "a removed request was listed")
	require.Equal(t, Stats{}, n.Stats())
	r.Remove()
	require.Equal(t, Stats{}, n.Stats())
}
