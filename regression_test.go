package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	"go.uber.org/goleak"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// Regression tests for races that the bitswap world has hit, each named
// after its scenario.

// A requester misses in the blockstore; before it subscribes, the block is
// added locally. In the two-layer design the add notified nobody and the
// request hung. Here Subscribe checks the blockstore itself: first in that
// exact order, then with the add racing the request.
func TestRegression_BlockAddedBetweenMissAndSubscribe(t *testing.T) {
	t.Run("in order", func(t *testing.T) {
		ctx := context.Background()
		e := newFaultEnv(t)
		b := testBlocks("added between miss and subscribe", 1)[0]
		s, _ := e.n.NewSubscription(1)
		if e.stored(t, b) {
			t.Fatal("the requester should miss")
		}
		if err := e.n.Publish(ctx, notifier.ResponseMessage{Blocks: []blocks.Block{b}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Subscribe(ctx, b.Cid()); err != nil {
			t.Fatal(err)
		}
		if m := receive(t, s); len(m.Blocks) != 1 || m.Blocks[0].Cid() != b.Cid() {
			t.Fatalf("got %s", describeMsg(m))
		}
	})
	t.Run("racing", func(t *testing.T) {
		e := newFaultEnv(t)
		rounds := 2000
		if raceDetector {
			rounds = 300
		}
		missed := 0
		for i, b := range testBlocks("racing the miss", rounds) {
			if addRacingMiss(t, e, uint64(i), b, i%2 == 0) {
				missed++
			}
		}
		t.Logf("%d of %d requests missed in the blockstore and subscribed", missed, rounds)
	})
}

// addRacingMiss races a request (blockstore miss, then Subscribe) against a
// local add of its block, starting either first, and reports whether the
// request missed. A request that missed must get the block.
func addRacingMiss(t *testing.T, e *faultEnv, id uint64, b blocks.Block, requesterFirst bool) (missed bool) {
	ctx := context.Background()
	s, _ := e.n.NewSubscription(id)
	defer s.Remove()
	start := make(chan struct{})
	requester := func() {
		<-start
		if _, err := e.inner.Get(ctx, b.Cid()); err == nil {
			return // no miss this time: the requester has its block
		}
		if err := s.Subscribe(ctx, b.Cid()); err != nil {
			t.Error(err)
			return
		}
		missed = true
	}
	adder := func() {
		<-start
		if err := e.n.Publish(ctx, notifier.ResponseMessage{Blocks: []blocks.Block{b}}); err != nil {
			t.Error(err)
		}
	}
	var wg sync.WaitGroup
	if requesterFirst {
		wg.Go(requester)
		wg.Go(adder)
	} else {
		wg.Go(adder)
		wg.Go(requester)
	}
	close(start)
	wg.Wait()
	if missed {
		receive(t, s)
	}
	return missed
}

// Fetch 3,000 blocks nobody has (peers answer DONT_HAVE), add block 100
// locally, then all the others. Every request completes, with each block
// once: one request for all 3,000 in a session, and 3,000 single-block
// requests in another.
func TestRegression_Fetch3000AddBlock100ThenTheRest(t *testing.T) {
	ctx := context.Background()
	e := newFaultEnv(t)
	bs := testBlocks("fetch 3000", 3000)
	keys := cidsOf(bs...)
	bulk, _ := e.n.NewSubscription(1)
	single, _ := e.n.NewSubscription(2)
	if err := bulk.Subscribe(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := single.Subscribe(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	results := make(chan error, 2)
	for _, s := range []*notifier.Subscription{bulk, single} {
		go func() { results <- receiveEachOnce(s, keys) }()
	}
	if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", DontHaves: keys}); err != nil {
		t.Fatal(err)
	}
	if err := e.n.Publish(ctx, notifier.ResponseMessage{Blocks: bs[100:101]}); err != nil {
		t.Fatal(err)
	}
	for i, b := range bs {
		if i != 100 {
			if err := e.n.Publish(ctx, notifier.ResponseMessage{Blocks: []blocks.Block{b}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if st := e.n.Stats(); st.Keys != 0 || st.Wants != 0 {
		t.Fatalf("Stats %+v after every block arrived", st)
	}
	if got := len(e.cancels.keys()); got != len(bs) {
		t.Fatalf("%d keys cancelled, want %d", got, len(bs))
	}
}

// receiveEachOnce reads s until the block of every key has arrived, and
// fails if one arrives twice or the wait hangs.
func receiveEachOnce(s *notifier.Subscription, keys []cid.Cid) error {
	missing := make(map[cid.Cid]bool, len(keys))
	for _, k := range keys {
		missing[k] = true
	}
	timeout := time.After(hangTimeout)
	for len(missing) > 0 {
		select {
		case m, ok := <-s.Messages():
			if !ok {
				return fmt.Errorf("session %d: closed with %d blocks missing", s.ID(), len(missing))
			}
			for _, b := range m.Blocks {
				if !missing[b.Cid()] {
					return fmt.Errorf("session %d: block %s twice", s.ID(), b.Cid())
				}
				delete(missing, b.Cid())
			}
		case <-timeout:
			return fmt.Errorf("session %d: %d blocks missing after %v: hung", s.ID(), len(missing), hangTimeout)
		}
	}
	return nil
}

// Many sessions opened and closed, some with a backlog being drained, some
// removed concurrently: the goroutine count and the index return to where
// they started.
func TestRegression_ManySessionsOpenedAndClosed(t *testing.T) {
	ctx := context.Background()
	baseline := goleak.IgnoreCurrent()
	before := runtime.NumGoroutine()
	e := newFaultEnv(t, notifier.WithBufferSize(1))
	bs := testBlocks("many sessions", 64)
	const sessions, workers = 2000, 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < sessions; i += workers {
				s, err := e.n.NewSubscription(uint64(w*100 + i/workers%50)) // IDs are reused once removed
				if err != nil {
					t.Error(err)
					return
				}
				keys := cidsOf(bs[i%64], bs[(i*7)%64], bs[(i*13)%64])
				if err := s.Subscribe(ctx, keys...); err != nil {
					t.Error(err)
				}
				if i%3 == 0 { // two unread messages: the second waits in a backlog with its drainer
					for range 2 {
						if err := e.n.Publish(ctx, notifier.ResponseMessage{From: "peer", Haves: keys[:1]}); err != nil {
							t.Error(err)
						}
					}
				}
				s.Remove()
			}
		})
	}
	wg.Wait()
	if st := e.n.Stats(); st != (notifier.Stats{}) {
		t.Fatalf("Stats %+v after every session closed, want zero", st)
	}
	if err := goleak.Find(baseline, goleak.IgnoreTopFunction("github.com/ipfs/go-log/writer.(*MirrorWriter).logRoutine")); err != nil {
		t.Fatalf("goroutines left by closed sessions: %v", err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("%d goroutines, %d before", after, before)
	}
}

// Shutdown racing Subscribe and Publish: every call returns nil or
// ErrClosed, nothing is delivered and no cancel is reported once Close has
// returned, every channel is closed, and the index is empty.
func TestRegression_ShutdownRacingSubscribeAndPublish(t *testing.T) {
	rounds := 50
	if raceDetector {
		rounds = 10
	}
	for range rounds {
		shutdownRace(t)
	}
}

func shutdownRace(t *testing.T) {
	ctx := context.Background()
	var closed atomic.Bool
	var late atomic.Int32
	lateCall := func() {
		if closed.Load() {
			late.Add(1)
		}
	}
	e := newFaultEnv(t, notifier.WithCancelFunc(func([]cid.Cid) { lateCall() }), notifier.WithBufferSize(2))
	r := &shutdownRacer{e: e, bs: testBlocks("shutdown", 16), closeNow: make(chan struct{}), onMessage: lateCall}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { r.work(t, uint64(w)) })
	}
	<-r.closeNow
	closeOrFail(t, e.n)
	closed.Store(true)
	wg.Wait()
	if n := late.Load(); n != 0 {
		t.Fatalf("%d deliveries or cancels after Close returned", n)
	}
	if st := e.n.Stats(); st != (notifier.Stats{}) {
		t.Fatalf("Stats %+v after Close", st)
	}
	for _, s := range r.subs {
		waitClosedChan(t, s)
		if err := s.Err(); err != nil && !errors.Is(err, notifier.ErrClosed) {
			t.Fatalf("session %d: Err() = %v after Close", s.ID(), err)
		}
		if err := s.Subscribe(ctx, r.bs[0].Cid()); !errors.Is(err, notifier.ErrClosed) {
			t.Fatalf("Subscribe after Close: %v", err)
		}
	}
	if err := e.n.Publish(ctx, notifier.ResponseMessage{Blocks: r.bs[:1]}); !errors.Is(err, notifier.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if _, err := e.n.NewSubscription(1); !errors.Is(err, notifier.ErrClosed) {
		t.Fatalf("NewSubscription after Close: %v", err)
	}
}

// shutdownRacer is the work that races Close: workers open sessions,
// subscribe, publish and remove until the Notifier refuses them, and the
// 200th operation signals closeNow.
type shutdownRacer struct {
	e         *faultEnv
	bs        []blocks.Block
	onMessage func()
	ops       atomic.Int32
	closeNow  chan struct{}
	mu        sync.Mutex // guards subs
	subs      []*notifier.Subscription
}

func (r *shutdownRacer) work(t *testing.T, w uint64) {
	ctx := context.Background()
	for i := 0; ; i++ {
		if r.ops.Add(1) == 200 {
			close(r.closeNow)
		}
		id := w<<32 | uint64(i)
		var s *notifier.Subscription
		var err error
		if i%2 == 0 {
			s, err = r.e.n.NewSubscription(id)
		} else {
			s, err = r.e.n.NewSubscriptionFunc(id, func(notifier.ResponseMessage) { r.onMessage() })
		}
		if err == nil {
			r.mu.Lock()
			r.subs = append(r.subs, s)
			r.mu.Unlock()
			err = s.Subscribe(ctx, cidsOf(r.bs[i%16], r.bs[(i+int(w))%16])...)
		}
		if err == nil {
			err = r.e.n.Publish(ctx, notifier.ResponseMessage{
				From: []string{"", "peer"}[i%2], Blocks: []blocks.Block{r.bs[i*3%16]}, Haves: cidsOf(r.bs[(i+1)%16]),
			})
		}
		if err != nil {
			if !errors.Is(err, notifier.ErrClosed) {
				t.Errorf("error %v racing Close, want nil or ErrClosed", err)
			}
			return
		}
		if i%5 == 0 {
			s.Remove()
		}
	}
}

// waitClosedChan reads s's channel until it is closed.
func waitClosedChan(t *testing.T, s *notifier.Subscription) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		for range s.Messages() {
		}
		close(done)
	}()
	wait(t, done, "Messages() to close")
}

// A duplicate of a block arrives from a second peer while the first copy is
// being stored. The subscriber is woken exactly once: never twice, and never
// zero times, not even when storing the first copy fails.
func TestRegression_DuplicateArrivesWhileFirstIsStored(t *testing.T) {
	for _, first := range []string{"stored", "cancelled while storing"} {
		t.Run("first copy "+first, func(t *testing.T) {
			for range 100 { // the second copy may or may not reach the lock first
				duplicateWhileStoring(t, first == "stored")
			}
		})
	}
}

func duplicateWhileStoring(t *testing.T, firstStored bool) {
	ctx := context.Background()
	e := newFaultEnv(t)
	b := testBlocks("duplicate while storing", 1)[0]
	s, _ := e.n.NewSubscription(1)
	if err := s.Subscribe(ctx, b.Cid()); err != nil {
		t.Fatal(err)
	}
	entered := e.fbs.Set(faultbs.PutMany, faultbs.Stall)
	defer e.fbs.Release(faultbs.PutMany)
	ctx1, cancel1 := context.WithCancel(ctx)
	defer cancel1()
	errs := make(chan error, 2)
	go func() { errs <- e.n.Publish(ctx1, notifier.ResponseMessage{From: "peerA", Blocks: []blocks.Block{b}}) }()
	waitEntered(t, entered)
	go func() { errs <- e.n.Publish(ctx, notifier.ResponseMessage{From: "peerB", Blocks: []blocks.Block{b}}) }()
	if firstStored {
		e.fbs.Release(faultbs.PutMany)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	} else {
		cancel1()
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("first copy: %v, want context.Canceled", err)
		}
		waitEntered(t, entered) // the second copy is the one being stored now
		e.fbs.Release(faultbs.PutMany)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := receive(t, s); len(m.Blocks) != 1 || m.Blocks[0].Cid() != b.Cid() {
		t.Fatalf("got %s", describeMsg(m))
	}
	quiet(t, s)
	closeOrFail(t, e.n)
}

// A CANCEL for a key (session A's last want ends) races a new WANT for the
// same key (session B subscribes, then sends WANT). On the wire, the last
// word for the key must be the WANT: the CANCEL is sent inside the operation
// that ended the last want, so it is on the wire before B's Subscribe
// returns, or it is not sent at all.
func TestRegression_CancelRacingWantForSameKey(t *testing.T) {
	rounds := 3000
	if raceDetector {
		rounds = 500
	}
	for _, how := range []string{"Unsubscribe", "Remove"} {
		t.Run("A "+how, func(t *testing.T) {
			w := &wire{}
			// The cancel function yields before sending: were it called after
			// the shard lock is released, B's Subscribe and WANT would slip in
			// before the CANCEL.
			n := notifier.New(nil, notifier.WithCancelFunc(func(keys []cid.Cid) {
				for range 20 {
					runtime.Gosched()
				}
				for range keys {
					w.send("CANCEL")
				}
			}))
			defer closeOrFail(t, n)
			k := testBlocks("cancel racing want", 1)[0].Cid()
			cancelFirst := 0
			for r := range rounds {
				log := cancelRacingWant(t, n, w, k, how == "Remove", r%2 == 0)
				if last := log[len(log)-1]; last != "WANT" {
					t.Fatalf("round %d: wire %v: the last word is %s while session 2 wants the key", r, log, last)
				}
				if slices.Contains(log, "CANCEL") {
					cancelFirst++
				}
			}
			t.Logf("%d of %d rounds: the CANCEL went out before the new WANT", cancelFirst, rounds)
		})
	}
}

// wire is what a bitswap client sends for one key, in order.
type wire struct {
	mu   sync.Mutex // guards msgs
	msgs []string
}

func (w *wire) send(msg string) {
	w.mu.Lock()
	w.msgs = append(w.msgs, msg)
	w.mu.Unlock()
}

// cancelRacingWant runs one round: session A wants k (its WANT is on the
// wire), then A ends its want while session B subscribes to k and sends its
// WANT, starting either first. It returns what went on the wire.
func cancelRacingWant(t *testing.T, n *notifier.Notifier, w *wire, k cid.Cid, remove, aFirst bool) []string {
	ctx := context.Background()
	a, _ := n.NewSubscription(1)
	b, _ := n.NewSubscription(2)
	defer b.Remove()
	if err := a.Subscribe(ctx, k); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.msgs = append(w.msgs[:0], "WANT")
	w.mu.Unlock()
	start := make(chan struct{})
	cancelA := func() {
		<-start
		if remove {
			a.Remove()
		} else {
			a.Unsubscribe(k)
		}
	}
	wantB := func() {
		<-start
		if err := b.Subscribe(ctx, k); err != nil {
			t.Error(err)
		}
		w.send("WANT")
	}
	var wg sync.WaitGroup
	if aFirst {
		wg.Go(cancelA)
		wg.Go(wantB)
	} else {
		wg.Go(wantB)
		wg.Go(cancelA)
	}
	close(start)
	wg.Wait()
	a.Remove()
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// A long-running session subscribes and unsubscribes a million keys, some of
// which arrive in between, and leaves nothing behind: the index is empty,
// every key was cancelled once, and the heap has not grown with the keys. The
// blockstore keeps nothing, so that only the Notifier could grow.
func TestRegression_LongRunningSessionMillionKeys(t *testing.T) {
	total := 1_000_000
	if testing.Short() {
		total = 100_000
	}
	const batch = 1000
	ctx := context.Background()
	var cancelled int
	n := notifier.New(discardStore{}, notifier.WithCancelFunc(func(keys []cid.Cid) { cancelled += len(keys) }))
	defer closeOrFail(t, n)
	s, _ := n.NewSubscriptionFunc(1, nil)
	heapBefore := heapInUse()
	blks := make([]blocks.Block, batch)
	keys := make([]cid.Cid, batch)
	for start := 0; start < total; start += batch {
		for i := range blks {
			blks[i] = blocks.NewBlock(binaryKey(start + i))
			keys[i] = blks[i].Cid()
		}
		if err := s.Subscribe(ctx, keys...); err != nil {
			t.Fatal(err)
		}
		if start%(4*batch) == 0 { // a quarter of the batches: half their blocks arrive
			if err := n.Publish(ctx, notifier.ResponseMessage{From: "peer", Blocks: blks[:batch/2]}); err != nil {
				t.Fatal(err)
			}
		}
		s.Unsubscribe(keys...)
		if st := n.Stats(); st.Keys != 0 || st.Wants != 0 {
			t.Fatalf("after %d keys: Stats %+v", start+batch, st)
		}
	}
	if cancelled != total {
		t.Fatalf("%d keys cancelled, want %d", cancelled, total)
	}
	if st := n.Stats(); st != (notifier.Stats{Subscriptions: 1}) {
		t.Fatalf("Stats %+v", st)
	}
	const slack = 16 << 20 // a million wants would take hundreds of MB
	if grown := heapInUse() - heapBefore; grown > slack {
		t.Fatalf("heap grew by %d bytes over %d keys: something keeps them", grown, total)
	}
	s.Remove()
}

func binaryKey(i int) []byte {
	return []byte{'k', byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// discardStore is a blockstore that keeps nothing.
type discardStore struct{}

func (discardStore) Has(context.Context, cid.Cid) (bool, error) { return false, nil }

func (discardStore) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	return nil, format.ErrNotFound{Cid: c}
}

func (discardStore) PutMany(context.Context, []blocks.Block) error { return nil }
