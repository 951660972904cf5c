package notifier

import (
	"errors"
	"runtime"
	"testing"

	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// chainOfPendingCloses makes m subscriptions, each wanting a key of its own,
// and a pending slow-consumer end (closeSlow's op) for each, parked one
// behind the other: the first on nobody yet, every other on the one before
// it, as lockAllOrPark parks a close on an older parked close whose mark
// holds the key it needs (claimant). That happens when closes of
// subscriptions that share a key overflow while the close ahead of them is
// parked; the public API gives no way to order it, so the chain is built
// here directly. It returns the subscriptions and the entry that resumes the
// first close.
func chainOfPendingCloses(t *testing.T, n *Notifier, m int) ([]*Subscription, parkEntry) {
	t.Helper()
	subs := make([]*Subscription, m)
	var first parkEntry
	var prev *op
	blks := mkBlocks("resume-chain", m)
	for i := range subs {
		s, err := n.NewSubscription(uint64(i + 1))
		require.NoError(t, err)
		k := blks[i].Cid()
		require.NoError(t, s.Subscribe(ctx, k))
		subs[i] = s
		o := n.getOp()
		o.sub, o.why, o.closing = s, ErrSlowConsumer, true
		o.pending = true
		n.pending.Add(1)
		gen := n.parkSeq.Add(1)
		o.park.Store(gen)
		if prev == nil {
			first = parkEntry{o: o, gen: gen}
		} else {
			prev.enqueue(o, gen)
		}
		prev = o
	}
	return subs, first
}

// Resuming a chain of pending closes, each parked on the one before it,
// runs them one after the other at one stack depth: the cancel function of
// the last is called no deeper than that of the first. Before, each close
// resumed the next from its own putOp, and the last of 200 ran about a
// thousand frames deeper than the first.
func TestResume_ChainOfPendingClosesDoesNotNest(t *testing.T) {
	const m = 200
	var depths []int
	var cancels cancelLog
	n := New(nil, WithCancelFunc(func(keys []cid.Cid) {
		cancels.record(keys)
		depths = append(depths, runtime.Callers(0, make([]uintptr, 1<<16)))
	}))
	subs, first := chainOfPendingCloses(t, n, m)

	n.resume([]parkEntry{first})

	require.Len(t, depths, m, "every close of the chain ran and reported its key")
	require.LessOrEqual(t, depths[m-1], depths[0], "the last close of the chain ran deeper than the first: %v", depths)
	require.Len(t, cancels.take(), m)
	for i, s := range subs {
		require.ErrorIs(t, s.Err(), ErrSlowConsumer, "subscription %d", i)
		_, open := <-s.Messages()
		require.False(t, open, "subscription %d: Messages() open", i)
	}
	require.Zero(t, n.Stats().Keys, "keys left in the index")
	require.NoError(t, n.Close()) // waits for n.pending: every close was counted out
}

// A cancel function that panics in one close of the chain stops neither the
// closes after it, those queued by the closes that completed included, nor
// the panic, which goes on to resume's caller once they are done.
func TestResume_ChainGoesOnAfterAPanic(t *testing.T) {
	const m = 20
	boom := errors.New("boom")
	calls := 0
	n := New(nil, WithCancelFunc(func([]cid.Cid) {
		calls++
		if calls == m/2 {
			panic(boom)
		}
	}))
	subs, first := chainOfPendingCloses(t, n, m)

	got := func() (r any) {
		defer func() { r = recover() }()
		n.resume([]parkEntry{first})
		return nil
	}()

	require.Equal(t, boom, got, "the panic goes on to the caller")
	require.Equal(t, m, calls, "every close of the chain ran")
	for i, s := range subs {
		require.ErrorIs(t, s.Err(), ErrSlowConsumer, "subscription %d", i)
	}
	require.Zero(t, n.Stats().Keys, "keys left in the index")
	require.NoError(t, n.Close())
}

// The same with a cancel function that exits the goroutine (runtime.Goexit,
// as t.FailNow does) in one close: the others still run, and every close is
// counted out of n.pending, so Close returns.
func TestResume_ChainGoesOnAfterGoexit(t *testing.T) {
	const m = 12
	calls := 0
	n := New(nil, WithCancelFunc(func([]cid.Cid) {
		calls++
		if calls == 3 {
			runtime.Goexit()
		}
	}))
	subs, first := chainOfPendingCloses(t, n, m)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		n.resume([]parkEntry{first})
	}()
	<-exited
	require.Equal(t, m, calls, "every close of the chain ran")
	for i, s := range subs {
		require.ErrorIs(t, s.Err(), ErrSlowConsumer, "subscription %d", i)
	}
	require.Zero(t, n.Stats().Keys)
	require.NoError(t, n.Close())
}
