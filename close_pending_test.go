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
		cancels := &cancelLog{}
		var hook atomic.Pointer[func([]cid.Cid)]
		n := New(st, WithBufferSize(1), WithMaxPending(1), WithCancelFunc(func(keys []cid.Cid) {
			cancels.record(keys)
			if f := hook.Load(); f != nil {
				(*f)(keys)
			}
		}))
		b := mkBlocks("close-pending-resumed", 2)
		kA, kB := b[0].Cid(), b[1].Cid()
		slow, release, published := atBoundBehindA(t, n, st, b)
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kB}}), "overflows slow")
		require.NoError(t, slow.Err(), "setup: the end is pending, parked on A's Publish")
		slow.Unsubscribe(kB) // slow wants only A, which A's Publish delivers
		require.Equal(t, []cid.Cid{kB}, cancels.take())

		closed := make(chan error, 1)
		var errAtClose error
		held := make(chan int, 1)   // the messages slow kept
		f := func(keys []cid.Cid) { // A's Publish, under A's shard lock
			go func() { closed <- n.Close() }()
			kept := 0
			for range slow.Messages() { // until Close has ended slow (closeIdle)
				kept++
			}
			errAtClose = slow.Err() // Close has ended slow
			slow.mu.Lock()          // the resumed end waits for it in lockAllOrPark
			held <- kept
		}
		hook.Store(&f)
		release()
		kept := <-held
		require.GreaterOrEqual(t, kept, 1, "the buffer's message is kept")
		hook.Store(nil)
		waitWaiters(t, &slow.mu, 1) // the end, resumed by A's Publish in putOp, in lockAllOrPark
		for stacks.Parked([]string{"notifier.(*Subscription).drain"}, nil) {
			runtime.Gosched() // slow's drain goroutine, which closed Messages(), is on its way out
		}

		// Close either returns or waits in closeAll (n.pending.Wait); nothing
		// else can hold it up: the Publish holds no lock and no reservation.
		returned := false
		for !returned && !stacks.Parked([]string{"sync.(*WaitGroup).Wait", "notifier.(*Notifier).closeAll"}, nil) {
			select {
			case err := <-closed:
				require.NoError(t, err)
				returned = true
			default:
				runtime.Gosched()
			}
		}
		t.Logf("Close returned before the pending end ran: %v", returned)
		marks := 0
		for i := range n.shards {
			n.shards[i].mu.Lock()
			marks += len(n.shards[i].idx.marks)
			n.shards[i].mu.Unlock()
		}
		require.Equal(t, 1, marks, "setup: the pending end has not run; its mark on A, dormant, is left")
		before := n.Stats()

		slow.mu.Unlock()
		require.NoError(t, <-published)
		if !returned {
			require.NoError(t, <-closed)
		}
		synctest.Wait()
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
	})
}
