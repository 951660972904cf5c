package notifier_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// Fault injection: a blockstore that fails, stalls, or honours context
// cancellation in Has, Get and PutMany (internal/faultbs). Whatever it does,
// nothing may end up stored but not delivered, no want may be lost, every
// error must reach the caller wrapped, and no goroutine may be left behind
// (goleak in TestMain).

func TestFaults_FailedGetRollsBackSubscribe(t *testing.T) {
	ctx := context.Background()
	e := newFaultEnv(t)
	bs := testBlocks("get fails", 3)
	s, _ := e.n.NewSubscription(1)
	if err := s.Subscribe(ctx, bs[0].Cid()); err != nil {
		t.Fatal(err)
	}
	before := e.n.Stats()
	e.fbs.Set(faultbs.Get, faultbs.Fail)
	err := s.Subscribe(ctx, cidsOf(bs...)...)
	checkWrapped(t, "Subscribe with a failing blockstore", err, faultbs.ErrInjected)
	if got := e.n.Stats(); got != before {
		t.Fatalf("Stats %+v after a failed Subscribe, want %+v as before", got, before)
	}
	if len(e.cancels.keys()) != 0 {
		t.Fatalf("cancels %v for wants that were rolled back", e.cancels.keys())
	}
	e.fbs.Release(faultbs.Get)

	if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs[1:2]}); err != nil {
		t.Fatal(err)
	}
	quiet(t, s)
	if e.stored(t, bs[1]) {
		t.Fatal("a rolled-back want still let a remote block in")
	}
	if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs[:1]}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, s); len(m.Blocks) != 1 || m.Blocks[0].Cid() != bs[0].Cid() {
		t.Fatalf("the want from before the failed Subscribe got %s", describeMsg(m))
	}
}

// A Subscribe whose check finds one key and fails on another delivers
// nothing: it is all or nothing.
func TestFaults_SubscribeIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	e := newFaultEnv(t)
	bs := testBlocks("all or nothing", 2)
	if err := e.n.Publish(ctx, notifier.ResponseMessage{Blocks: bs[:1]}); err != nil {
		t.Fatal(err)
	}
	s, _ := e.n.NewSubscription(1)
	e.fbs.FailKeys(faultbs.Get, bs[1].Cid())
	for _, keys := range [][]cid.Cid{cidsOf(bs[0], bs[1]), cidsOf(bs[1], bs[0])} {
		checkWrapped(t, "Subscribe", s.Subscribe(ctx, keys...), faultbs.ErrInjected)
		quiet(t, s)
		if st := e.n.Stats(); st.Wants != 0 {
			t.Fatalf("Stats %+v after a failed Subscribe", st)
		}
	}
	e.fbs.FailKeys(faultbs.Get)
	if err := s.Subscribe(ctx, cidsOf(bs...)...); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, s); len(m.Blocks) != 1 || m.Blocks[0].Cid() != bs[0].Cid() {
		t.Fatalf("got %s, want the stored block", describeMsg(m))
	}
	if len(e.cancels.keys()) != 0 {
		t.Fatalf("cancel %v for a want satisfied inside the Subscribe that made it", e.cancels.keys())
	}
}

func TestFaults_StalledGetHonoursContext(t *testing.T) {
	e := newFaultEnv(t)
	bs := testBlocks("stalled get", 1)
	s, _ := e.n.NewSubscription(1)
	entered := e.fbs.Set(faultbs.Get, faultbs.Stall)
	defer e.fbs.Release(faultbs.Get)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Subscribe(ctx, bs[0].Cid()) }()
	waitEntered(t, entered)
	cancel()
	checkWrapped(t, "Subscribe cancelled while the blockstore stalls", <-errc, context.Canceled)
	if st := e.n.Stats(); st.Wants != 0 {
		t.Fatalf("Stats %+v: the cancelled Subscribe left its want", st)
	}
}

func TestFaults_FailedPutManyLosesNoWant(t *testing.T) {
	ctx := context.Background()
	e := newFaultEnv(t)
	bs := testBlocks("put fails", 3)
	s, _ := e.n.NewSubscription(1)
	if err := s.Subscribe(ctx, cidsOf(bs[0], bs[1])...); err != nil {
		t.Fatal(err)
	}
	before := e.n.Stats()
	e.fbs.Set(faultbs.PutMany, faultbs.Fail)
	for _, msg := range []notifier.ResponseMessage{
		{From: "peer", Blocks: bs[:1], Haves: cidsOf(bs[1])},
		{Blocks: bs[2:]}, // local: stored even though nobody wants it
	} {
		checkWrapped(t, "Publish with a failing blockstore", e.n.Publish(ctx, msg), faultbs.ErrInjected)
	}
	quiet(t, s)
	if e.stored(t, bs[0]) || e.stored(t, bs[2]) {
		t.Fatal("a failed PutMany stored")
	}
	if got := e.n.Stats(); got != before || len(e.cancels.keys()) != 0 {
		t.Fatalf("Stats %+v, cancels %v after a failed Publish; want %+v and none", got, e.cancels.keys(), before)
	}
	e.fbs.Release(faultbs.PutMany)
	if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs[:1]}); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, s); len(m.Blocks) != 1 || m.Blocks[0].Cid() != bs[0].Cid() {
		t.Fatalf("after the store healed, got %s", describeMsg(m))
	}
	if got := e.cancels.keys(); !slices.Equal(got, cidsOf(bs[0])) {
		t.Fatalf("cancels %v, want the delivered key once", got)
	}
}

func TestFaults_StalledPutManyHonoursContext(t *testing.T) {
	e := newFaultEnv(t)
	bs := testBlocks("stalled put", 1)
	s, _ := e.n.NewSubscription(1)
	if err := s.Subscribe(context.Background(), bs[0].Cid()); err != nil {
		t.Fatal(err)
	}
	entered := e.fbs.Set(faultbs.PutMany, faultbs.Stall)
	defer e.fbs.Release(faultbs.PutMany)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs}) }()
	waitEntered(t, entered)
	cancel()
	checkWrapped(t, "Publish cancelled while the blockstore stalls", <-errc, context.Canceled)
	quiet(t, s)
	if e.stored(t, bs[0]) {
		t.Fatal("a cancelled PutMany stored")
	}
	if st := e.n.Stats(); st.Wants != 1 {
		t.Fatalf("Stats %+v: the cancelled Publish ended the want", st)
	}
}

// A torn PutMany writes its blocks and then reports failure. The Notifier
// trusts the error: it delivers nothing and keeps the wants, so the block is
// stored while still wanted until the sender retries (bitswap re-requests; a
// local adder gets the error) or another session subscribes to the key. Both
// recoveries must deliver it.
func TestFaults_TornPutManyRecovers(t *testing.T) {
	ctx := context.Background()
	for _, recovery := range []string{"retry", "other session subscribes"} {
		t.Run(recovery, func(t *testing.T) {
			e := newFaultEnv(t)
			bs := testBlocks("torn "+recovery, 1)
			s, _ := e.n.NewSubscription(1)
			if err := s.Subscribe(ctx, bs[0].Cid()); err != nil {
				t.Fatal(err)
			}
			e.fbs.Set(faultbs.PutMany, faultbs.FailAfter)
			checkWrapped(t, "Publish with a torn PutMany", e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs}), faultbs.ErrInjected)
			quiet(t, s)
			e.fbs.Release(faultbs.PutMany)
			var other *notifier.Subscription
			if recovery == "retry" {
				if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs}); err != nil {
					t.Fatal(err)
				}
			} else {
				other, _ = e.n.NewSubscription(2)
				if err := other.Subscribe(ctx, bs[0].Cid()); err != nil {
					t.Fatal(err)
				}
				receive(t, other)
			}
			if m := receive(t, s); len(m.Blocks) != 1 {
				t.Fatalf("got %s, want the block", describeMsg(m))
			}
			if got := e.cancels.keys(); !slices.Equal(got, cidsOf(bs[0])) {
				t.Fatalf("cancels %v, want the key once: session 1's WANT went out", got)
			}
		})
	}
}

// Close while a Subscribe or a Publish is stalled in the blockstore waits for
// it, releases the wants it left, and leaves nothing running: no callback
// fires once Close has returned.
func TestFaults_CloseWithStalledOperation(t *testing.T) {
	for _, stalled := range []string{"Subscribe", "Publish"} {
		t.Run(stalled, func(t *testing.T) { closeWithStalled(t, stalled) })
	}
}

// closeWithStalled is TestFaults_CloseWithStalledOperation with stalled
// ("Subscribe" or "Publish") parked in the blockstore as Close begins.
func closeWithStalled(t *testing.T, stalled string) {
	ctx := context.Background()
	late := &lateCalls{}
	e := newFaultEnv(t, notifier.WithCancelFunc(func([]cid.Cid) { late.call() }))
	bs := testBlocks("stalled at close", 2)
	s, _ := e.n.NewSubscriptionFunc(1, func(notifier.ResponseMessage) { late.call() })
	if err := s.Subscribe(ctx, bs[0].Cid()); err != nil {
		t.Fatal(err)
	}
	method, op := faultbs.Get, func() error { return s.Subscribe(ctx, bs[1].Cid()) }
	if stalled == "Publish" {
		method, op = faultbs.PutMany, func() error {
			return e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: bs[:1]})
		}
	}
	entered := e.fbs.Set(method, faultbs.StallIgnoreCtx)
	opDone := make(chan struct{})
	go func() {
		defer close(opDone)
		if err := op(); err != nil && !errors.Is(err, notifier.ErrClosed) {
			t.Errorf("stalled %s: %v", stalled, err)
		}
	}()
	waitEntered(t, entered)
	closeDone := make(chan struct{})
	go func() {
		closeOrFail(t, e.n)
		late.closed.Store(true)
		close(closeDone)
	}()
	// Release the blockstore only once Close has begun (NewSubscription then
	// fails), so that Close has to wait for the stalled operation.
	waitCloseBegun(e.n)
	e.fbs.Release(method)
	wait(t, closeDone, "Close")
	wait(t, opDone, stalled)
	requireClosedQuiet(t, e.n, s, late)
}

// lateCalls counts the callbacks (cancel function, delivery) made once
// closed is set, as Close returns.
type lateCalls struct {
	closed atomic.Bool
	late   atomic.Int32
}

// call is a callback: it counts itself if Close has returned.
func (l *lateCalls) call() {
	if l.closed.Load() {
		l.late.Add(1)
	}
}

// waitCloseBegun returns once Close of n has begun: NewSubscription then
// fails with ErrClosed.
func waitCloseBegun(n *notifier.Notifier) {
	for id := uint64(100); ; id++ {
		if _, err := n.NewSubscription(id); errors.Is(err, notifier.ErrClosed) {
			break
		}
		runtime.Gosched()
	}
}

// requireClosedQuiet checks n once Close has returned: nothing left in its
// Stats, no callback made after Close returned, and s ended by the Close.
func requireClosedQuiet(t *testing.T, n *notifier.Notifier, s *notifier.Subscription, late *lateCalls) {
	t.Helper()
	if st := n.Stats(); st != (notifier.Stats{}) {
		t.Fatalf("Stats %+v after Close", st)
	}
	if n := late.late.Load(); n != 0 {
		t.Fatalf("%d callbacks after Close returned", n)
	}
	if !errors.Is(s.Err(), notifier.ErrClosed) {
		t.Fatalf("Err() = %v after Close", s.Err())
	}
}

// TestFaults_Stress runs Subscribe, Unsubscribe and Publish from many
// goroutines while blockstore faults are switched on and off, then heals the
// blockstore and checks, through the public API only, that:
//   - every error wraps the injected fault or the context's error;
//   - every delivered block was stored when delivered (G3);
//   - no stored key is still wanted (nothing stored but not delivered);
//   - every key still wanted is delivered, once, to exactly the sessions that
//     want it, when it arrives (no want lost);
//   - the index is empty afterwards, and the subscriptions ended as slow
//     consumers on the way hold nothing and have their channels closed.
//
// Blocks are also deleted behind the Notifier's back, as garbage collection
// does (under a GC lock, as in IPFS), so that keys keep leaving the
// blockstore.
func TestFaults_Stress(t *testing.T) { runFaultStress(t, false) }

// The same with WithFailedCheckAsMiss: no Subscribe error may then come
// from a failed check, and a key whose Get failed while its block was
// stored stays wanted until the block is published again. So a stored key
// may still be wanted (the option's promise, not a lost block); it must
// then reach exactly the sessions that want it, as any other.
func TestFaults_StressTakingFailedChecksForMisses(t *testing.T) { runFaultStress(t, true) }

// runFaultStress is TestFaults_Stress, with WithFailedCheckAsMiss if
// missOnFailedCheck: workers run stressStep on eight func sessions and two
// unread channel subscriptions, then the blockstore is healed and the
// invariants checked.
func runFaultStress(t *testing.T, missOnFailedCheck bool) {
	const sessions, keys, workers = 8, 24, 4
	iterations := 20000
	if testing.Short() || raceDetector {
		iterations = 2500
	}
	e, taken := newFaultStressEnv(t, missOnFailedCheck)
	bs := testBlocks("stress", keys)
	inbox := &sessionInbox{got: make([][]notifier.ResponseMessage, sessions)}
	subs := newStressSessions(t, e, inbox, sessions)
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		wg.Go(func() {
			for range iterations {
				stressStep(t, e, rng, subs, bs)
			}
		})
	}
	wg.Wait()
	for m := faultbs.Has; m <= faultbs.PutMany; m++ {
		e.fbs.Release(m)
		e.fbs.FailKeys(m)
	}
	t.Logf("%d operations failed, %d Gets, %d PutManys, %d keys cancelled",
		stressFailures.Swap(0), e.fbs.Calls(faultbs.Get), e.fbs.Calls(faultbs.PutMany), len(e.cancels.keys()))
	checkUnreadSessions(t, e, subs, sessions, taken)
	checkQuiescent(t, e, inbox, bs)
}

// newFaultStressEnv returns the fault environment of runFaultStress, whose
// Notifier ends slow consumers past two pending messages and, if
// missOnFailedCheck, takes failed checks for misses, counting them in taken
// and checking each is the injected fault.
func newFaultStressEnv(t *testing.T, missOnFailedCheck bool) (e *faultEnv, taken *atomic.Int64) {
	opts := []notifier.Option{notifier.WithBufferSize(1), notifier.WithMaxPending(2)}
	taken = &atomic.Int64{}
	if missOnFailedCheck {
		opts = append(opts, notifier.WithFailedCheckAsMiss(func(err error) {
			if !errors.Is(err, faultbs.ErrInjected) {
				t.Errorf("error function got %v, want the injected fault", err)
			}
			taken.Add(1)
		}))
	}
	e = newFaultEnv(t, opts...)
	e.missOnFailedCheck = missOnFailedCheck
	return e, taken
}

// newStressSessions returns the subscriptions of runFaultStress: sessions
// func subscriptions, which put what they get in inbox after checking each
// block was stored first (G3), then two channel subscriptions nobody reads.
func newStressSessions(t *testing.T, e *faultEnv, inbox *sessionInbox, sessions int) []*notifier.Subscription {
	subs := make([]*notifier.Subscription, sessions, sessions+2)
	for i := range subs {
		subs[i], _ = e.n.NewSubscriptionFunc(uint64(i), func(m notifier.ResponseMessage) {
			for _, b := range m.Blocks {
				if !e.stored(t, b) {
					t.Errorf("G3: session %d got %s before it was stored", i, b.Cid())
				}
			}
			inbox.put(i, m)
		})
	}
	// Two channel subscriptions that nobody reads: they are ended as slow
	// consumers in the middle of it all, while still being used.
	for id := range uint64(2) {
		s, _ := e.n.NewSubscription(100 + id)
		subs = append(subs, s)
	}
	return subs
}

// checkUnreadSessions checks the unread subscriptions of runFaultStress
// (subs past sessions): each is live, or ended as a slow consumer with its
// channel closed; and the Notifier counts the live ones.
func checkUnreadSessions(t *testing.T, e *faultEnv, subs []*notifier.Subscription, sessions int, taken *atomic.Int64) {
	t.Helper()
	live := sessions
	for _, s := range subs[sessions:] {
		switch err := s.Err(); {
		case err == nil:
			live++
		case errors.Is(err, notifier.ErrSlowConsumer):
			waitClosedChan(t, s)
		default:
			t.Errorf("unread session %d: Err() = %v", s.ID(), err)
		}
	}
	t.Logf("%d of 2 unread sessions ended as slow consumers; %d failed checks taken for misses", len(subs)-live, taken.Load())
	if st := e.n.Stats(); st.Subscriptions != live {
		t.Errorf("Stats %+v, want %d live subscriptions", st, live)
	}
}

var (
	stressFailures atomic.Int64
	stressGC       sync.RWMutex // held to delete blocks, read-held by every other operation
)

// sessionInbox keeps what func subscriptions received, per session.
type sessionInbox struct {
	mu  sync.Mutex // guards got
	got [][]notifier.ResponseMessage
}

func (in *sessionInbox) put(i int, m notifier.ResponseMessage) {
	in.mu.Lock()
	in.got[i] = append(in.got[i], m)
	in.mu.Unlock()
}

// take returns the sessions that received a message since the last take,
// and forgets the messages.
func (in *sessionInbox) take() (sessions []int, msgs [][]notifier.ResponseMessage) {
	in.mu.Lock()
	defer in.mu.Unlock()
	msgs = make([][]notifier.ResponseMessage, len(in.got))
	for i, ms := range in.got {
		if len(ms) > 0 {
			sessions = append(sessions, i)
		}
		msgs[i], in.got[i] = ms, nil
	}
	return sessions, msgs
}

// stressStep is one random operation of a worker of runFaultStress, drawn
// by rng, with a ctx that may end: a switch of faults, a Subscribe, an
// Unsubscribe, the deletion of a block by garbage collection, or a Publish.
// Any error it returns must be a fault, a cancellation or a slow consumer's
// end, wrapped by the notifier.
func stressStep(t *testing.T, e *faultEnv, rng *rand.Rand, subs []*notifier.Subscription, bs []blocks.Block) {
	ctx := context.Background()
	if rng.IntN(8) == 0 {
		ctx = fuzzCtx(true)
	}
	var err error
	op := rng.IntN(10)
	if op != 5 {
		stressGC.RLock()
		defer stressGC.RUnlock()
	}
	switch {
	case op == 0:
		stressSwitchFaults(e, rng, bs)
	case op <= 3:
		err = subs[rng.IntN(len(subs))].Subscribe(ctx, cidsOf(stressPick(rng, bs)...)...)
		if e.missOnFailedCheck && errors.Is(err, faultbs.ErrInjected) {
			t.Errorf("Subscribe: %v, with WithFailedCheckAsMiss", err)
		}
	case op == 4:
		subs[rng.IntN(len(subs))].Unsubscribe(cidsOf(stressPick(rng, bs)...)...)
	case op == 5:
		stressCollectGarbage(t, ctx, e, rng, bs)
	default:
		msg := notifier.ResponseMessage{From: []string{"", "peerA", "peerB"}[rng.IntN(3)], Blocks: stressPick(rng, bs)}
		if rng.IntN(2) == 0 {
			msg.Haves = cidsOf(stressPick(rng, bs)...)
		}
		err = e.n.Publish(ctx, msg)
	}
	if err == nil {
		return
	}
	stressFailures.Add(1)
	expected := errors.Is(err, faultbs.ErrInjected) || errors.Is(err, context.Canceled) || errors.Is(err, notifier.ErrSlowConsumer)
	if !expected || !strings.HasPrefix(err.Error(), "notifier: ") {
		t.Errorf("error %q: want a fault, a cancellation or a slow consumer's end, wrapped by the notifier", err)
	}
}

// stressPick returns one to three of bs, drawn by rng, repeats allowed.
func stressPick(rng *rand.Rand, bs []blocks.Block) []blocks.Block {
	r := make([]blocks.Block, 1+rng.IntN(3))
	for i := range r {
		r[i] = bs[rng.IntN(len(bs))]
	}
	return r
}

// stressSwitchFaults switches the faults of one blockstore method, drawn by
// rng: all its calls fail, or those of some of bs, or none.
func stressSwitchFaults(e *faultEnv, rng *rand.Rand, bs []blocks.Block) {
	m := faultbs.Method(rng.IntN(3))
	switch p := rng.IntN(20); {
	case p < 3:
		e.fbs.Set(m, faultbs.Fail)
	case p < 8:
		e.fbs.FailKeys(m, cidsOf(stressPick(rng, bs)...)...)
	default:
		e.fbs.Set(m, faultbs.Pass)
		e.fbs.FailKeys(m)
	}
}

// stressCollectGarbage deletes one of bs, drawn by rng, from the blockstore
// behind the Notifier's back. Garbage collection keeps keys leaving the
// blockstore, so that wants live long enough to meet the faults. Like the GC
// lock of an IPFS node, it excludes operations in flight: G3 is checked
// inside them.
func stressCollectGarbage(t *testing.T, ctx context.Context, e *faultEnv, rng *rand.Rand, bs []blocks.Block) {
	t.Helper()
	stressGC.Lock()
	if err := e.inner.DeleteBlock(ctx, bs[rng.IntN(len(bs))].Cid()); err != nil {
		t.Error(err)
	}
	stressGC.Unlock()
}

// checkQuiescent learns who wants each key by publishing a HAVE for it (a
// HAVE reaches exactly the sessions that want the key, synchronously for func
// subscriptions), then publishes the block and checks the invariants listed
// on TestFaults_Stress.
func checkQuiescent(t *testing.T, e *faultEnv, inbox *sessionInbox, bs []blocks.Block) {
	t.Helper()
	ctx := context.Background()
	inbox.take()
	for _, b := range bs {
		if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "probe", Haves: cidsOf(b)}); err != nil {
			t.Fatal(err)
		}
		wanting, _ := inbox.take()
		if e.stored(t, b) && len(wanting) > 0 && !e.missOnFailedCheck {
			t.Errorf("%s is stored but sessions %v still want it: stored but not delivered", b.Cid(), wanting)
			continue
		}
		before := len(e.cancels.keys())
		if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "late peer", Blocks: []blocks.Block{b}}); err != nil {
			t.Fatal(err)
		}
		got, msgs := inbox.take()
		if !slices.Equal(got, wanting) {
			t.Errorf("%s reached sessions %v, want %v: the sessions that wanted it", b.Cid(), got, wanting)
		}
		for _, i := range got {
			if len(msgs[i]) != 1 || len(msgs[i][0].Blocks) != 1 {
				t.Errorf("session %d: %d messages for one block", i, len(msgs[i]))
			}
		}
		if cancels := e.cancels.keys()[before:]; len(cancels) != min(len(wanting), 1) {
			t.Errorf("cancels %v for %s, want it reported %d times", cancels, b.Cid(), min(len(wanting), 1))
		}
	}
	if st := e.n.Stats(); st.Keys != 0 || st.Wants != 0 {
		t.Errorf("Stats %+v once every key has arrived", st)
	}
}
