package notifier

import (
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"

	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/stacks"
)

// The one schedule in which Close's other waits pass while a pending
// slow-consumer end (Subscription.closeSlow) has not run: the operation that
// ends the last want the end marked takes it over (op.letGo) and resumes it
// in putOp, after it has released its locks and reservations, which is
// after barrier and inflight stop waiting for it. By then Close has ended
// the subscription itself, with closeIdle, since it wants nothing. Here:
// slow wants A only (B unsubscribed), its end is parked on a Publish of A
// whose PutMany stalls; the Publish delivers A, which ends slow's want of A,
// and its cancel function starts Close and waits until Close has ended slow,
// then takes slow.mu, so that the end the Publish resumes as it returns
// waits for the test. Close then waits for it in n.pending.Wait, or, without
// that line, returns first. Either way the resumed end changes nothing that
// Close promises: the cancel function gets nothing more, Stats, Err and
// Messages() are as they were when Close returned, and no goroutine is left
// (synctest.Test checks that). This pins why n.pending.Wait is not
// observable; see the comment on it in closeAll.
func TestClose_PendingEndResumedAfterCloseChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels, hook := newWithCancelHook(st)
		b := mkBlocks("close-pending-resumed", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		slow, release, published := atBoundBehindA(t, n, st, b)
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kB}}), "overflows slow")
		require.NoError(t, slow.Err(), "setup: the end is pending, parked on A's Publish")
		slow.Unsubscribe(kB) // slow wants only A, which A's Publish delivers
		require.Equal(t, []cid.Cid{kB}, cancels.take())

		closed := make(chan error, 1)
		var errAtClose error
		held := make(chan int, 1) // the messages slow kept
		f := closeFromCancel(n, slow, closed, held, &errAtClose)
		hook.Store(&f)
		release()
		kept := <-held
		require.GreaterOrEqual(t, kept, 1, "the buffer's message is kept")
		hook.Store(nil)
		waitWaiters(t, &slow.mu, 1) // the end, resumed by A's Publish in putOp, in lockAllOrPark

		// Close either returns or waits in closeAll (n.pending.Wait); nothing
		// else can hold it up: the Publish holds no lock and no reservation.
		returned := closeReturnsOrWaits(t, closed)
		t.Logf("Close returned before the pending end ran: %v", returned)
		require.Equal(t, 1, markCount(n), "setup: the pending end has not run; its mark on A, dormant, is left")
		before := n.Stats()

		slow.mu.Unlock()
		require.NoError(t, <-published)
		if !returned {
			require.NoError(t, <-closed)
		}
		synctest.Wait()
		requireResumedEndChangedNothing(t, n, slow, cancels, kA, before, errAtClose)
	})
}

// newWithCancelHook returns a Notifier over st, WithBufferSize(1) and
// WithMaxPending(1), whose cancel function records its keys in the
// returned log and then calls the function the returned hook holds, if any.
func newWithCancelHook(st *stallStore) (*Notifier, *cancelLog, *atomic.Pointer[func([]cid.Cid)]) {
	cancels := &cancelLog{}
	var hook atomic.Pointer[func([]cid.Cid)]
	n := New(st, WithBufferSize(1), WithMaxPending(1), WithCancelFunc(func(keys []cid.Cid) {
		cancels.record(keys)
		if f := hook.Load(); f != nil {
			(*f)(keys)
		}
	}))
	return n, cancels, &hook
}

// closeFromCancel returns the hook that A's Publish runs in its cancel
// function, under A's shard lock: it starts Close (which sends its error on
// closed), reads slow's messages until Close has ended slow, stores slow's
// Err in errAtClose, waits for slow's drain goroutine to return, takes
// slow.mu, so that the end the Publish resumes waits for the test, and sends
// on held how many messages slow kept.
func closeFromCancel(n *Notifier, slow *Subscription, closed chan<- error, held chan<- int, errAtClose *error) func([]cid.Cid) {
	return func(keys []cid.Cid) { // A's Publish, under A's shard lock
		go func() { closed <- n.Close() }()
		kept := 0
		for range slow.Messages() { // until Close has ended slow (closeIdle)
			kept++
		}
		*errAtClose = slow.Err() // Close has ended slow
		waitDrainExit(slow)
		slow.mu.Lock() // the resumed end waits for it in lockAllOrPark
		held <- kept
	}
}

// waitDrainExit returns once the drain goroutine of s, closed, has returned.
// A drain that has just handed a message over takes s.mu to see s closed
// (Subscription.drain): taking s.mu for good before it has, as the hook of
// closeFromCancel does next, would leave it, and the Close that waits for
// it in closeIdle, waiting for the test. Found by CI (-shuffle 1796660449004375982,
// a ten-minute hang).
func waitDrainExit(s *Subscription) {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	if exited != nil {
		<-exited
	}
}

// closeReturnsOrWaits yields until the Close that sends on closed has
// returned (true) or waits in closeAll, in n.pending.Wait (false).
func closeReturnsOrWaits(t *testing.T, closed <-chan error) (returned bool) {
	t.Helper()
	for !returned && !stacks.Parked([]string{"sync.(*WaitGroup).Wait", "notifier.(*Notifier).closeAll"}, nil) {
		select {
		case err := <-closed:
			require.NoError(t, err)
			returned = true
		default:
			runtime.Gosched()
		}
	}
	return returned
}

// markCount returns how many keys are marked in n's shards, each read
// under its shard's lock.
func markCount(n *Notifier) int {
	marks := 0
	for i := range n.shards {
		n.shards[i].mu.Lock()
		marks += len(n.shards[i].idx.marks)
		n.shards[i].mu.Unlock()
	}
	return marks
}

// requireResumedEndChangedNothing checks, once everything has run, that
// Close's promises held from when it returned: Stats were empty then
// (before) and are, slow had ended as a slow consumer and is, its
// Messages() is closed, the cancel function got only A's Publish's report
// of kA, and nothing is left in the index or waiting.
func requireResumedEndChangedNothing(t *testing.T, n *Notifier, slow *Subscription, cancels *cancelLog, kA cid.Cid, before Stats, errAtClose error) {
	t.Helper()
	require.Equal(t, Stats{}, before)
	require.ErrorIs(t, errAtClose, ErrSlowConsumer)
	require.Equal(t, []cid.Cid{kA}, cancels.take(), "A's Publish reports A; the resumed end, nothing")
	require.Equal(t, Stats{}, n.Stats())
	require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
	_, open := <-slow.Messages()
	require.False(t, open)
	requireIndexEmpty(t, n)
	require.Zero(t, n.waiting.Load())
	require.NoError(t, n.Close())
	require.Empty(t, cancels.take())
}
