package notifier

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/waitmu"
)

// G5: every way a want ends reports the key exactly once, when it was the
// key's last want.
func TestCancel_ReportedOnceWhenLastWantEnds(t *testing.T) {
	ends := map[string]func(n *Notifier, s *Subscription, k cid.Cid, b blocks.Block){
		"Unsubscribe": func(_ *Notifier, s *Subscription, k cid.Cid, _ blocks.Block) { s.Unsubscribe(k) },
		"Remove":      func(_ *Notifier, s *Subscription, _ cid.Cid, _ blocks.Block) { s.Remove() },
		"Publish": func(n *Notifier, _ *Subscription, _ cid.Cid, b blocks.Block) {
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}}))
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			n, cancels := newWithCancels(t, memStore())
			b := mkBlocks("cancel-"+name, 1)[0]
			a, c := mustSub(t, n, 1), mustSub(t, n, 2)
			require.NoError(t, a.Subscribe(ctx, b.Cid()))
			require.NoError(t, c.Subscribe(ctx, b.Cid()))
			if name != "Publish" { // one block ends both wants at once
				end(n, a, b.Cid(), b)
				require.Empty(t, cancels.take(), "c still wants the key")
			}
			end(n, c, b.Cid(), b)
			require.Equal(t, []cid.Cid{b.Cid()}, cancels.take())
			a.Unsubscribe(b.Cid())
			c.Unsubscribe(b.Cid())
			a.Remove()
			c.Remove()
			require.Empty(t, cancels.take(), "reported twice")
		})
	}
}

func TestCancel_CloseReportsRemainingKeys(t *testing.T) {
	log := &cancelLog{}
	n := New(memStore(), WithCancelFunc(log.record))
	b := mkBlocks("close-cancels", 3)
	a, c := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, a.Subscribe(ctx, keysOf(b[:2])...))
	require.NoError(t, c.Subscribe(ctx, keysOf(b[1:])...))
	require.NoError(t, n.Close())
	require.Equal(t, sorted(keysOf(b)...), log.take())
	require.NoError(t, n.Close())
	require.Empty(t, log.take())
}

// G5: a want satisfied by the blockstore check inside the Subscribe that
// created it had no WANT sent, so it is not reported.
func TestCancel_NotReportedForWantSatisfiedInsideItsSubscribe(t *testing.T) {
	bs := memStore()
	n, cancels := newWithCancels(t, bs)
	b := mkBlocks("hit", 1)
	require.NoError(t, bs.PutMany(ctx, b))
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b[0].Cid()))
	require.Equal(t, b, recv(t, s).Blocks)
	require.Empty(t, cancels.take())
}

// G5, the mechanism: the cancel function runs while the shards of the keys it
// reports are held, so a later Subscribe of those keys waits for it.
func TestCancel_CalledWithReportedShardsHeld(t *testing.T) {
	var n *Notifier
	var mu sync.Mutex
	var calls int
	var free []cid.Cid
	n = New(memStore(), WithCancelFunc(func(keys []cid.Cid) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		for _, k := range keys {
			if !n.shardHeld(k) {
				free = append(free, k)
			}
		}
	}))
	defer func() { require.NoError(t, n.Close()) }()
	b := mkBlocks("held", 16)
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, keysOf(b)...))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:4]}))
	s.Unsubscribe(keysOf(b[4:8])...)
	s.Remove()
	require.Equal(t, 3, calls)
	require.Empty(t, free, "cancel function called without the shard lock of its keys")
}

// G5: while the cancel function runs, operations on keys in other shards are
// not held up, including the shards of the reporting operation's own keys
// that it does not report.
func TestCancel_HoldsUpOnlyItsShards(t *testing.T) {
	n, k, entered, release := newWithSlowCancel(t)
	other := keysInOtherShards(n, k.Cid(), "elsewhere", 1)
	s, keeper := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, s.Subscribe(ctx, k.Cid(), other[0].Cid()))
	require.NoError(t, keeper.Subscribe(ctx, other[0].Cid()))

	unsubscribed := make(chan struct{})
	go func() {
		defer close(unsubscribed)
		s.Unsubscribe(k.Cid(), other[0].Cid()) // reports k only: keeper still wants other
	}()
	done(t, entered, "cancel function called")

	ops := make(chan struct{})
	go func() {
		defer close(ops)
		o := mustSub(t, n, 3)
		require.NoError(t, o.Subscribe(ctx, other[0].Cid()))
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: other}))
		require.Equal(t, other, recv(t, o).Blocks)
		require.Equal(t, other, recv(t, keeper).Blocks)
		_ = n.Stats()
		o.Remove()
	}()
	done(t, ops, "operations on another shard while the cancel function runs")
	close(release)
	done(t, unsubscribed, "Unsubscribe")
}

// G5, end to end: a client that sends CANCEL from the cancel function and
// WANT after Subscribe returns never has a CANCEL as the last word for a key
// that is still wanted.
func TestCancel_NeverOvertakesLaterWant(t *testing.T) {
	var wire sync.Mutex
	last := map[cid.Cid]string{}
	send := func(kind string, keys ...cid.Cid) {
		wire.Lock()
		for _, k := range keys {
			last[k] = kind
		}
		wire.Unlock()
	}
	n := New(memStore(), WithShards(1), WithCancelFunc(func(keys []cid.Cid) { send("CANCEL", keys...) }))
	defer func() { require.NoError(t, n.Close()) }()
	keys := keysOf(mkBlocks("overtake", 4))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			s := mustSub(t, n, uint64(g))
			for i := range 500 {
				k := keys[(i+g)%len(keys)]
				if i%2 == 0 {
					require.NoError(t, s.Subscribe(ctx, k))
					send("WANT", k)
				} else {
					s.Unsubscribe(k)
				}
			}
			s.Unsubscribe(keys[(g+1)%len(keys)]) // leave the goroutines' last wants in place
		})
	}
	wg.Wait()
	wanted := map[cid.Cid]bool{}
	for i := range n.shards {
		for k := range n.shards[i].idx.wants {
			wanted[k] = true
		}
	}
	for _, k := range keys {
		if wanted[k] {
			require.Equal(t, "WANT", last[k], "key %s is wanted but the last word on the wire is CANCEL", k)
		} else {
			require.Equal(t, "CANCEL", last[k], fmt.Sprintf("key %s is not wanted but no CANCEL was last", k))
		}
	}
}

// G5 (SPEC: the cancel function "may delay operations on keys that share a
// shard with the keys it reports, never the whole Notifier"; README: "While it
// runs it holds up only keys that share a shard with the keys it reports").
//
// A Publish must not call the cancel function while it holds the locks of the
// subscriptions it delivers to: a second Publish, on a key in another shard,
// that reaches one of those subscriptions would wait in lockTargets for the
// cancel function, holding its own shard, and so would, behind it, any
// operation on that shard, of any subscription. (Found in review of b1ba4a4,
// which called the cancel function before handing messages over.)
func TestCancel_OfPublishDoesNotHoldUpItsSubscriptions(t *testing.T) {
	n, k, entered, release := newWithSlowCancel(t)
	other := keysInOtherShards(n, k.Cid(), "elsewhere", 1)[0]
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, k.Cid(), other.Cid()))

	published := make(chan struct{})
	go func() {
		defer close(published)
		assert.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{k}}))
	}()
	done(t, entered, "cancel function called by the Publish of k")

	// Operations on a key whose shard the cancel function does not hold.
	ops := make(chan struct{})
	go func() {
		defer close(ops)
		_ = n.Publish(ctx, ResponseMessage{From: "p", Haves: []cid.Cid{other.Cid()}})
	}()

	var stuck bool
	for deadline := time.Now().Add(hang); time.Now().Before(deadline); runtime.Gosched() {
		select {
		case <-ops:
		default:
			if waitmu.Waiting(&s.mu) > 0 { // lockTargets
				stuck = true
				break
			}
			continue
		}
		break
	}
	close(release) // let everything finish, whatever the outcome
	done(t, published, "Publish of k")
	done(t, ops, "Publish of a HAVE in another shard")
	require.False(t, stuck, "a Publish on a key in another shard waited for the cancel function (on a subscription lock)")
}

// newWithSlowCancel returns a Notifier whose cancel function, when it reports
// k, closes entered and then blocks until release is closed.
func newWithSlowCancel(t *testing.T) (n *Notifier, k blocks.Block, entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	k = mkBlocks("slow-cancel", 1)[0]
	n = New(memStore(), WithShards(8), WithCancelFunc(func(keys []cid.Cid) {
		if slices.Contains(keys, k.Cid()) {
			close(entered)
			<-release
		}
	}))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n, k, entered, release
}

func TestHasCancelFunc(t *testing.T) {
	without := New(nil)
	require.False(t, without.HasCancelFunc())
	require.NoError(t, without.Close())
	with := New(nil, WithCancelFunc(func([]cid.Cid) {}))
	require.True(t, with.HasCancelFunc())
	require.NoError(t, with.Close())
}

// The cancel function owns the keys it gets (WithCancelFunc): a slice that it
// keeps is never written again, though each operation reuses its scratch
// space, where the keys were collected, for the next one.
func TestCancel_FunctionOwnsTheKeysItGets(t *testing.T) {
	var kept [][]cid.Cid // appended on the publishing goroutine, the test's
	n := New(memStore(), WithCancelFunc(func(keys []cid.Cid) { kept = append(kept, keys) }))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	s := mustRequest(t, n, nil)
	blks := mkBlocks("cancel-owns", 64)
	for _, b := range blks {
		require.NoError(t, s.Subscribe(ctx, b.Cid()))
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}}))
	}
	require.Len(t, kept, len(blks))
	for i, keys := range kept {
		require.Equal(t, []cid.Cid{blks[i].Cid()}, keys, "the keys of Publish %d, read after the others", i)
	}
}
