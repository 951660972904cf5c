package notifier

import (
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// stallStore is a blockstore whose Get and PutMany of chosen keys stop until
// released, and say when they have started.
type stallStore struct {
	Blockstore
	mu      sync.Mutex
	stalled map[cid.Cid]chan struct{} // key -> release
	entered chan cid.Cid
}

func newStallStore() *stallStore {
	return &stallStore{Blockstore: memStore(), stalled: map[cid.Cid]chan struct{}{}, entered: make(chan cid.Cid, 16)}
}

// stall makes the next blockstore calls on k wait until the returned func is
// called.
func (s *stallStore) stall(t *testing.T, k cid.Cid) (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.stalled[k] = ch
	s.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return release
}

// publishStalled publishes b with its PutMany stalled, and returns once that
// PutMany has begun, b's key reserved: release lets it go on, and published
// gets the Publish's result.
func (s *stallStore) publishStalled(t *testing.T, n *Notifier, b blocks.Block) (release func(), published chan error) {
	t.Helper()
	release = s.stall(t, b.Cid())
	published = make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}) }()
	require.Equal(t, b.Cid(), <-s.entered)
	return release, published
}

// goAsleep runs f on its own goroutine, in a synctest bubble, and checks,
// once the bubble has settled, that f waits: the setup of the tests whose
// subject is a waiter. what names f. The channel gets f's result.
func goAsleep(t *testing.T, what string, f func() error) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	synctest.Wait()
	select {
	case err := <-done:
		t.Fatalf("setup: %s did not wait for the older waiters (returned %v)", what, err)
	default:
	}
	return done
}

// returnsNow checks, in a synctest bubble, that the call behind done has
// returned nil without waiting for the stalled blockstore call that release
// lets go: else it releases it, waits for the call, and fails with why.
func returnsNow(t *testing.T, done chan error, release func(), why string) {
	t.Helper()
	synctest.Wait()
	select {
	case err := <-done:
		require.NoError(t, err)
	default:
		release()
		require.NoError(t, <-done)
		t.Error(why)
	}
}

// reserveByGet makes k busy, reserved by a Subscribe of k and y by a new
// subscription u whose Get of y stalls, and returns once that Get has begun:
// release lets it go on, and subscribed gets the Subscribe's result. u then
// wants k, unless the blockstore has k, and y, likewise. A waiter marks only
// the keys it finds busy (Notifier.markBusy): the tests that need a waiter's
// mark on a key make the key busy this way, which changes nobody else's
// wants.
func (s *stallStore) reserveByGet(t *testing.T, n *Notifier, id uint64, k, y cid.Cid) (u *Subscription, release func(), subscribed chan error) {
	t.Helper()
	u = mustSub(t, n, id)
	release = s.stall(t, y)
	subscribed = make(chan error, 1)
	go func() { subscribed <- u.Subscribe(ctx, k, y) }()
	require.Equal(t, y, <-s.entered)
	return u, release, subscribed
}

func (s *stallStore) wait(k cid.Cid) {
	s.mu.Lock()
	ch := s.stalled[k]
	s.mu.Unlock()
	if ch != nil {
		s.entered <- k
		<-ch
	}
}

// G11: a PutMany and a Get that do not return hold no lock of the Notifier.
// With one shard, every key shares it: while both are stalled, Subscribe,
// Publish (storing and delivering), Unsubscribe and Remove of other keys
// complete. Once released, the stalled operations deliver what G1-G3 say.
func TestIO_StalledStoreDelaysOnlyItsKeys(t *testing.T) {
	sc := stallPutAndGet(t)
	n, b, cancels := sc.n, sc.b, sc.cancels
	kPut := b[0].Cid()

	// Both stalled; every operation on other keys goes through.
	other := sc.requireOtherKeysGoThrough(t)
	select {
	case err := <-sc.published:
		t.Fatalf("the stalled Publish returned %v", err)
	case err := <-sc.subscribed:
		t.Fatalf("the stalled Subscribe returned %v", err)
	default:
	}
	none(t, sc.waiter)

	sc.releasePut()
	require.NoError(t, <-sc.published)
	require.Equal(t, ResponseMessage{From: "peer", Blocks: b[:1]}, recv(t, sc.waiter), "G1: delivered once stored")
	sc.releaseGet()
	require.NoError(t, <-sc.subscribed)
	require.Equal(t, ResponseMessage{Blocks: b[1:2]}, recv(t, sc.getter), "G1: a stored block found by the check")
	require.Equal(t, sorted(kPut), cancels.take())
	other.Remove()
	require.Equal(t, sorted(b[4].Cid()), cancels.take())
	sc.waiter.Remove()
	sc.getter.Remove()
	require.Equal(t, Stats{}, n.Stats(), "G8")
}

// putAndGetStalled is the scene of TestIO_StalledStoreDelaysOnlyItsKeys, on
// one shard: waiter wants kPut (b[0]), whose Publish is stalled in its
// PutMany, and getter's Subscribe of kGet (b[1], stored) is stalled in its
// Get. releasePut and releaseGet let them go on; published and subscribed
// get their results.
type putAndGetStalled struct {
	st                     *stallStore
	n                      *Notifier
	cancels                *cancelLog
	b                      []blocks.Block
	waiter, getter         *Subscription
	releasePut, releaseGet func()
	published, subscribed  chan error
}

// stallPutAndGet sets the scene up and returns once both blockstore calls
// have begun.
func stallPutAndGet(t *testing.T) *putAndGetStalled {
	t.Helper()
	st := newStallStore()
	n, cancels := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("stall", 6)
	kPut, kGet := b[0].Cid(), b[1].Cid()
	require.NoError(t, st.Blockstore.PutMany(ctx, b[1:2])) // kGet is stored: its Subscribe will find it

	waiter := mustSub(t, n, 1)
	require.NoError(t, waiter.Subscribe(ctx, kPut))
	releasePut, releaseGet := st.stall(t, kPut), st.stall(t, kGet)

	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[:1]}) }()
	require.Equal(t, kPut, <-st.entered)
	getter := mustSub(t, n, 2)
	subscribed := make(chan error, 1)
	go func() { subscribed <- getter.Subscribe(ctx, kGet) }()
	require.Equal(t, kGet, <-st.entered)
	return &putAndGetStalled{
		st: st, n: n, cancels: cancels, b: b, waiter: waiter, getter: getter,
		releasePut: releasePut, releaseGet: releaseGet, published: published, subscribed: subscribed,
	}
}

// requireOtherKeysGoThrough checks, while both calls are stalled, that a
// Subscribe, a Publish (storing and delivering, G3), an Unsubscribe and a
// Remove of other keys complete, with their CANCELs. It returns other,
// which still wants b[2] and b[4].
func (sc *putAndGetStalled) requireOtherKeysGoThrough(t *testing.T) (other *Subscription) {
	t.Helper()
	n, st, b, cancels := sc.n, sc.st, sc.b, sc.cancels
	other = mustSub(t, n, 3)
	require.NoError(t, other.Subscribe(ctx, b[2].Cid(), b[3].Cid(), b[4].Cid()))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[2:3], Haves: []cid.Cid{b[3].Cid()}}))
	require.Equal(t, ResponseMessage{From: "peer", Blocks: b[2:3], Haves: []cid.Cid{b[3].Cid()}}, recv(t, other))
	other.Unsubscribe(b[3].Cid())
	has, err := st.Has(ctx, b[2].Cid())
	require.NoError(t, err)
	require.True(t, has, "G3")
	gone := mustSub(t, n, 4)
	require.NoError(t, gone.Subscribe(ctx, b[5].Cid()))
	gone.Remove()
	require.Empty(t, waitClosed(t, gone))
	require.Equal(t, sorted(b[2].Cid(), b[3].Cid(), b[5].Cid()), cancels.take())
	return other
}

// G1/G2 with I/O outside the locks: operations on a key whose blockstore call
// is stalled wait for it, and see it done. A Subscribe of a key being stored
// gets the block once, from the Publish; a second Publish of it waits and
// delivers nothing more; Unsubscribe and Remove of a subscription wanting it
// wait too, so none of them sees the key half stored.
func TestIO_OperationsOnAStalledKeyWait(t *testing.T) {
	st := newStallStore()
	n, cancels := newWithCancels(t, st, WithShards(1))
	b := mkBlocks("wait", 1)[0]
	k := b.Cid()
	early, leaver := mustSub(t, n, 1), mustSub(t, n, 3)
	require.NoError(t, early.Subscribe(ctx, k))
	require.NoError(t, leaver.Subscribe(ctx, k))
	release := st.stall(t, k)
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}) }()
	require.Equal(t, k, <-st.entered)

	late := mustSub(t, n, 2)
	results := startOpsOnStalledKey(t, n, b, early, late, leaver)
	waitWaiting(t, n, 4)
	require.Empty(t, results, "operations on the stalled key must wait")
	// The read calls do not wait: they answer from the wants as they were
	// before the stalled Publish (doc.go).
	require.True(t, n.Wanted(k))
	require.True(t, early.Wants(k))
	require.False(t, n.Interested(k))

	release()
	require.NoError(t, <-published)
	for range 4 {
		<-results
	}
	requireStalledKeyOpsSawItDone(t, b, early, late, leaver)
	require.Equal(t, sorted(k), cancels.take(), "one CANCEL, for the delivery to early and leaver")
	require.Equal(t, Stats{Subscriptions: 2}, n.Stats())
}

// startOpsOnStalledKey starts, each on its own goroutine, the four
// operations on b's stalled key: late's Subscribe, a second Publish,
// early's Unsubscribe and leaver's Remove. Each sends its name on the
// channel returned once it has returned.
func startOpsOnStalledKey(t *testing.T, n *Notifier, b blocks.Block, early, late, leaver *Subscription) chan string {
	k := b.Cid()
	results := make(chan string, 4)
	go func() {
		require.NoError(t, late.Subscribe(ctx, k))
		results <- "subscribe"
	}()
	go func() {
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "other", Blocks: []blocks.Block{b}}))
		results <- "publish again"
	}()
	go func() {
		early.Unsubscribe(k)
		results <- "unsubscribe"
	}()
	go func() {
		leaver.Remove()
		results <- "remove"
	}()
	return results
}

// requireStalledKeyOpsSawItDone checks, once all have returned, that each
// operation saw the stalled Publish done: leaver's Remove after the
// delivery, early's block delivered once despite the second Publish, and
// late's Subscribe finding the stored block.
func requireStalledKeyOpsSawItDone(t *testing.T, b blocks.Block, early, late, leaver *Subscription) {
	t.Helper()
	require.Equal(t, []ResponseMessage{{From: "peer", Blocks: []blocks.Block{b}}}, waitClosed(t, leaver),
		"Remove waited for the Publish, which found leaver wanting the block")
	require.Equal(t, ResponseMessage{From: "peer", Blocks: []blocks.Block{b}}, recv(t, early))
	none(t, early)
	// late subscribed after the Publish took effect: the check found the block.
	require.Equal(t, []blocks.Block{b}, recv(t, late).Blocks)
	none(t, late)
}

// waitWaiting waits until want operations of n wait for a reservation.
func waitWaiting(t *testing.T, n *Notifier, want int64) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for n.waiting.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations wait for a reservation, want %d", n.waiting.Load(), want)
		}
		runtime.Gosched()
	}
}

// panicStore panics in Get and PutMany of one key.
type panicStore struct {
	Blockstore
	key cid.Cid
}

// A blockstore call that panics leaves no reservation behind: the panic goes
// on to the caller, and later operations on the key, and Close, do not wait
// for ever.
func TestIO_PanickingStoreLeavesNoReservation(t *testing.T) {
	b := mkBlocks("panic", 1)[0]
	k := b.Cid()
	ps := &panicStore{Blockstore: memStore(), key: k}
	n := New(ps, WithShards(1))
	s := mustSub(t, n, 1)
	require.PanicsWithValue(t, "blockstore: Get "+k.String(), func() { _ = s.Subscribe(ctx, k) })
	require.False(t, n.isReserved(k))
	require.PanicsWithValue(t, "blockstore: PutMany "+k.String(), func() {
		_ = n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}})
	})
	require.False(t, n.isReserved(k))
	ps.key = cid.Undef // the store works again
	require.NoError(t, s.Subscribe(ctx, k), "the key is free")
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: []blocks.Block{b}}))
	require.Equal(t, []blocks.Block{b}, recv(t, s).Blocks)
	closed := make(chan struct{})
	go func() { defer close(closed); require.NoError(t, n.Close()) }()
	done(t, closed, "Close after a panicking blockstore")
}
