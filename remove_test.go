package notifier

// Remove: Messages() is closed when it returns, whoever else ends the
// subscription meanwhile; it unlocks only what it locked, drops the backlog,
// and leaves a later subscription of the same ID alone.

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// G7: Remove is idempotent and safe concurrently with itself and with Close;
// the session ID is free once Remove returns.
func TestRemove_IdempotentAndConcurrent(t *testing.T) {
	n, cancels := newWithCancels(t, memStore())
	b := mkBlocks("remove", 4)
	s := mustSub(t, n, 7)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(s.Remove)
	}
	wg.Wait()
	waitClosed(t, s)
	require.NoError(t, s.Err(), "Remove is not a failure")
	require.ErrorIs(t, s.Subscribe(ctx, b[0].Cid()), ErrClosed)
	require.Equal(t, sorted(keysOf(b)...), cancels.take())
	require.Equal(t, Stats{}, n.Stats())

	again := mustSub(t, n, 7)
	require.NoError(t, again.Subscribe(ctx, b[0].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
	require.Equal(t, b[:1], recv(t, again).Blocks)
	none(t, s)
}

// An end takes effect at one instant: while Remove waits for a shard held by
// another operation, the subscription is fully live (channel open, Err nil,
// ID taken, keys wanted and delivered), and once Remove returns it is fully
// gone. Seeing it closed while its wants are still in the index would let a
// remote block be stored for nobody.
func TestRemove_AtomicWithItsWants(t *testing.T) {
	hs := &hookStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, hs, WithShards(4))
	kA := blockInShard(n, "a", 0, true)
	bB := blockInShard(n, "b", 0, false)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, kA.Cid(), bB.Cid()))
	unblock := blockShard(t, n, hs, 0)

	removed := make(chan struct{})
	go func() { defer close(removed); s.Remove() }()
	waitWaiters(t, &n.shards[0].mu, 1)
	select {
	case _, open := <-s.Messages():
		require.True(t, open, "Messages() closed while the wants are still in the index")
	default:
	}
	require.NoError(t, s.Err())
	_, err := n.NewSubscription(1)
	require.ErrorIs(t, err, ErrDuplicateSession)
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{bB}}))
	require.Equal(t, []blocks.Block{bB}, recv(t, s).Blocks, "a stored remote block reached its wanter")

	unblock()
	done(t, removed, "Remove")
	require.Empty(t, waitClosed(t, s))
	require.Equal(t, sorted(kA.Cid(), bB.Cid()), cancels.take())
	again := mustSub(t, n, 1)
	again.Remove()
}

// Remove returns with Messages() closed, even while a backlog was being drained.
func TestRemove_ClosesMessagesBeforeReturning(t *testing.T) {
	n, _ := newWithCancels(t, nil, WithBufferSize(0))
	k := mkBlocks("closed-on-return", 1)[0].Cid()
	for i := range 500 {
		s := mustSub(t, n, uint64(i))
		require.NoError(t, s.Subscribe(ctx, k))
		seqHave(t, n, k, 0) // a drain goroutine now holds it
		s.Remove()
		select {
		case _, open := <-s.Messages():
			require.False(t, open, "round %d: a message after Remove returned", i)
		default:
			t.Fatalf("round %d: Messages() still open after Remove returned", i)
		}
	}
}

// Every Remove returns with Messages() closed and the drain goroutine gone,
// not only the one that closed the subscription: a second Remove running
// while the first waits for the drain goroutine, or a Remove racing the
// close of a slow consumer, used to return at once, with out still open
// until drain got round to closing it. (Review finding of issue 10.) Since
// then the end closes out itself, under s.mu (markClosed), and this test
// checks the rest: draining is true until the drain goroutine is done with
// s, under s.mu, so it says whether one still runs without reading from
// out, which would free drain and hide the race.
func TestRemove_ConcurrentCallsAllReturnWithMessagesClosed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []Option
		other func(n *Notifier, s *Subscription, k cid.Cid) (removed bool)
	}{
		{"two Removes", nil, func(_ *Notifier, s *Subscription, _ cid.Cid) bool { s.Remove(); return true }},
		{"Remove and slow-consumer end", []Option{WithMaxPending(1)}, func(n *Notifier, _ *Subscription, k cid.Cid) bool {
			_ = n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{k}}) // past WithMaxPending: closes s
			return false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _ := newWithCancels(t, nil, append([]Option{WithBufferSize(0)}, tc.opts...)...)
			k := mkBlocks("closed-on-every-return", 1)[0].Cid()
			var open atomic.Int64
			for i := range 400 {
				s := mustSub(t, n, uint64(i))
				require.NoError(t, s.Subscribe(ctx, k))
				seqHave(t, n, k, 0) // drain holds it, blocked on out
				seqHave(t, n, k, 1) // in the backlog
				raceRemoveWith(n, s, k, tc.other, &open)
				waitClosed(t, s)
			}
			require.Zero(t, open.Load(), "rounds of 400 in which Remove returned with Messages() still open")
		})
	}
}

// raceRemoveWith runs a Remove of s against other, started together, and
// waits for both: each of them that removed s adds one to open if, once it
// returned, s's drain goroutine still ran (see countIfStillDraining).
func raceRemoveWith(n *Notifier, s *Subscription, k cid.Cid, other func(n *Notifier, s *Subscription, k cid.Cid) (removed bool), open *atomic.Int64) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Add(2)
	go func() { defer wg.Done(); <-start; s.Remove(); countIfStillDraining(s, open) }()
	go func() {
		defer wg.Done()
		<-start
		if other(n, s, k) {
			countIfStillDraining(s, open)
		}
	}()
	close(start)
	wg.Wait()
}

// countIfStillDraining adds one to open if s's drain goroutine has not
// finished with s (s.draining, read under s.mu): called as a Remove returns,
// it counts a return with Messages() possibly still open, without reading
// from out, which would free drain and hide the race.
func countIfStillDraining(s *Subscription, open *atomic.Int64) {
	s.mu.Lock()
	if s.draining {
		open.Add(1)
	}
	s.mu.Unlock()
}

// lockAll (Remove, Close, slow-consumer end) must unlock only the shards it
// locked when a Subscribe added a key in a new shard while lockAll waited for
// its first set. It used to grow o.locks first and unlock the grown set: a
// shard it never locked, which is "fatal error: sync: unlock of unlocked
// mutex" when the shard is free, and when another operation holds it, a
// release of that operation's lock. (Found in review; present since the
// atomic end of e4a5d45.)
//
// Interleaving: s wants kA (shard 1), whose shard another Subscribe holds.
// Remove: lockAll locks s.mu, sees shard 1, unlocks s.mu, waits for shard 1.
// s.Subscribe(kB), kB in shard 2: adds kB under shard 2 and s.mu, returns.
// Shard 1 is released; lockAll rescans, adds shard 2 to o.locks, then
// n.unlock(o.locks) unlocks shards 1 and 2; shard 2 was never locked.
//
// The scenario runs in a child process, since a fatal error cannot be
// recovered and would take the rest of the package's tests with it.
func TestRemove_RacingSubscribeUnlocksOnlyWhatItLocked(t *testing.T) {
	if os.Getenv("NOTIFIER_LOCKALL_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRemove_RacingSubscribeUnlocksOnlyWhatItLocked$", "-test.count=1")
		cmd.Env = append(os.Environ(), "NOTIFIER_LOCKALL_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			first, _, _ := strings.Cut(string(out), "\n\n")
			t.Fatalf("Remove racing Subscribe, in a child process: %v\n%s", err, first)
		}
		return
	}
	hs := &hookStore{Blockstore: memStore()}
	n, _ := newWithCancels(t, hs, WithShards(4))
	kA := blockInShard(n, "a", 1, true).Cid()
	kB := blockInShard(n, "b", 2, true).Cid()
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, kA))

	unblock := blockShard(t, n, hs, 1)
	removed := make(chan struct{})
	go func() { defer close(removed); s.Remove() }()
	waitWaiters(t, &n.shards[1].mu, 1) // lockAll's first pass, s.mu released

	require.NoError(t, s.Subscribe(ctx, kB)) // shard 2 is free
	unblock()
	done(t, removed, "Remove")
	require.Equal(t, Stats{}, n.Stats(), "nothing is left")
}

// Remove's doc: the backlog is dropped, the channel's buffer can still be
// read. (It said every message not yet received was dropped; review.)
func TestRemove_DropsTheBacklogNotTheBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(nil, WithBufferSize(1))
		s := mustSub(t, n, 1)
		ks := keysOf(mkBlocks("remove drops the backlog", 3))
		require.NoError(t, s.Subscribe(ctx, ks...))
		for _, k := range ks {
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{k}}))
		}
		synctest.Wait() // the drain goroutine holds the second message, the third waits behind it
		s.Remove()
		var got []cid.Cid
		for m := range s.Messages() {
			got = append(got, m.Haves...)
		}
		require.Equal(t, ks[:1], got, "the buffered message is read; the two behind it were dropped")
		require.NoError(t, s.Err())
		require.NoError(t, n.Close())
	})
}

// G7 and G9: Remove stays idempotent once its session ID is reused: a second
// Remove of the old subscription leaves the new one registered, so the ID
// is still refused to a third (g7-old-remove-unregisters-new: unregister
// deleting the ID's entry whoever holds it).
func TestRemove_AgainAfterItsIDIsReusedLeavesTheNewOne(t *testing.T) {
	n, _ := newWithCancels(t, memStore())
	old := mustSub(t, n, 7)
	old.Remove()
	s := mustSub(t, n, 7)
	old.Remove()
	_, err := n.NewSubscription(7)
	require.ErrorIs(t, err, ErrDuplicateSession)
	require.Equal(t, Stats{Subscriptions: 1}, n.Stats())
	s.Remove()
	require.Equal(t, Stats{}, n.Stats())
}
