package notifier

import (
	"fmt"
	"sync/atomic"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/fifo"
	"github.com/bitswapsync/notifier/internal/shrink"
	"github.com/bitswapsync/notifier/internal/waitmu"
)

// This file holds the Subscription type and its delivery end: the channel or
// delivery function, the backlog and the goroutine that drains it, and the
// close of Messages(). Every method of Subscription that takes s.mu lives in
// a subscription*.go file:
//
//   - subscription_want.go: wants begun (Subscribe) and read (Wants,
//     AppendWanted);
//   - subscription_release.go: wants ended (Unsubscribe, Release);
//   - subscription_end.go: the end of a subscription (Remove, ReleaseAll,
//     Close's and a slow consumer's end), which locks every shard it wants;
//   - subscription_targets.go: the subscriptions an operation hands messages
//     to, locked and handed them.

// Subscription is one session's view of the Notifier: the keys it wants and
// the channel on which it receives what arrives for them, or the function it
// hands them to. Create it with Notifier.NewSubscription (a session with a
// channel), NewSubscriptionFunc (a session with a delivery function),
// NewInterest (a session's interest only, as boxo's session interest
// manager records it), NewRequest, or Fetch (a request with no session ID);
// all methods are safe for concurrent use.
//
// An idle subscription costs no goroutine. Messages wait in the channel's
// buffer and, when that is full, in a backlog that one goroutine per lagging
// subscription drains into the channel, in publish order, and then exits.
type Subscription struct {
	n   *Notifier
	id  uint64
	seq uint64 // unique, unlike id; orders the locking of several subscriptions

	fn    func(ResponseMessage) // set for NewSubscriptionFunc, NewRequest and NewInterest: takes messages instead of out
	keeps bool                  // an interest subscription (NewInterest): its wants live in the index's held map
	anon  bool                  // a request (NewRequest): no session ID
	out   chan ResponseMessage  // nil if fn is set; closed once, by markClosed

	// signal is Messages() of a subscription with fn set, a chan
	// ResponseMessage that only says when s closes. It is made on the first
	// call of Messages() (doneSignal), or set to an already closed channel
	// by markClosed if nobody asked for it before: a request that nobody
	// watches that way allocates none.
	signal atomic.Value

	// mu guards the fields below. It is taken after shard locks (see shard.mu).
	mu       waitmu.Mutex
	backlog  fifo.Queue[ResponseMessage] // messages out could not take yet
	draining bool                        // a drain goroutine is running and is out's only sender
	exited   chan struct{}               // closed when the latest drain goroutine returns
	quit     chan struct{}               // made with the first drain goroutine; closed by markClosed to stop a drain that is handing
	overflow bool                        // past WithMaxPending: the op that saw it ends s
	ending   bool                        // a Remove, ReleaseAll or Close of s has begun (close): a later ReleaseAll reports nothing
	listed   bool                        // a request (anon) that is in n.requests; see enlist
	err      error                       // why it ended; see Err
	asleep   []*op                       // its Subscribes waiting in lockFree, which markClosed wakes (addSleeper)

	// keys maps each key s wants to its interest in the index. An entry whose
	// interest has ended is stale: the key's block was delivered and s no
	// longer wants it. Delivery leaves stale entries in place, since deleting
	// from every subscriber's map costs a cache miss per subscriber and block;
	// stale counts them, and want compacts the map once they are most of it,
	// as accept does for a map above shrink.Floor entries and for one that
	// is all stale, so that a subscription left idle after its deliveries
	// keeps no entry if it wants nothing, else at most shrink.Floor entries,
	// or about twice as many as it still wants. A key wanted again replaces
	// its stale entry. keysPeak lets the map give back the storage of a
	// burst of wants (shrink.Fit).
	keys     map[cid.Cid]*interest
	stale    int
	keysPeak shrink.Peak

	// closed: nothing more is sent, keys are empty. Set under s.mu, never
	// cleared; atomic so that Subscribe can refuse a closed s without s.mu.
	closed atomic.Bool

	// handing says whether the drain goroutine is handing a message to out
	// outside s.mu (handingOn), which markClosed turns into handingStopped
	// to stop it; see drain.
	handing atomic.Uint32
}

// The states of Subscription.handing.
const (
	handingOff     uint32 = iota // drain is not past s.mu with a message: it sends nothing until it has s.mu again
	handingOn                    // drain has let go of s.mu to hand a message to out
	handingStopped               // markClosed stopped the hand-over: drain returns at once, without s.mu
)

func newSubscription(n *Notifier, id uint64, bufSize int) *Subscription {
	s := &Subscription{n: n, id: id, seq: n.subSeq.Add(1)}
	if bufSize >= 0 {
		s.out = make(chan ResponseMessage, bufSize)
	}
	return s
}

// closedSignal is the done signal of the subscriptions closed before anyone
// asked for it.
var closedSignal = func() chan ResponseMessage {
	c := make(chan ResponseMessage)
	close(c)
	return c
}()

// doneSignal returns Messages() of a subscription with fn set, making it if
// needed.
func (s *Subscription) doneSignal() chan ResponseMessage {
	if c, ok := s.signal.Load().(chan ResponseMessage); ok {
		return c
	}
	if s.anon {
		s.mu.Lock()
		s.enlist() // or else s is closed, and the signal closed with it
		s.mu.Unlock()
	}
	if c := make(chan ResponseMessage); s.signal.CompareAndSwap(nil, c) {
		return c
	}
	return s.signal.Load().(chan ResponseMessage)
}

// ID returns the session ID given to NewSubscription, NewSubscriptionFunc or
// NewInterest; 0 for a subscription of NewRequest, which has none.
func (s *Subscription) ID() uint64 { return s.id }

// Messages returns the channel on which the subscription receives, in publish
// order, every message filtered to the keys it wants. The Notifier closes it
// when the subscription ends: after Remove, Close, or when it is ended as a
// slow consumer; Err then says why.
func (s *Subscription) Messages() <-chan ResponseMessage {
	if s.fn != nil {
		return s.doneSignal()
	}
	return s.out
}

// Err returns why Messages() was closed: nil after Remove (or while the
// subscription is live), ErrClosed after Close, ErrSlowConsumer if it fell
// more than WithMaxPending messages behind. ErrSlowConsumer wins: once an
// operation (a Publish, or a Subscribe that delivers found blocks) has
// overflowed s, messages are dropped, and a Remove or Close that ends s
// before that operation does leaves Err reporting ErrSlowConsumer. It waits
// for no blockstore call and no other subscription's consumer, only for the
// subscription's own lock, which an operation holds while it hands its
// messages over (with the delivery functions of the other subscriptions it
// delivers to, which must be fast: NewSubscriptionFunc).
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && s.lazilyClosed() {
		return ErrClosed
	}
	return s.err
}

// lazilyClosed reports whether s is a request that Close does not know of
// (see enlist) and Close has begun: s is closed, as if by Close, though
// nothing marked it. The caller holds s.mu.
func (s *Subscription) lazilyClosed() bool {
	return s.anon && !s.listed && !s.closed.Load() && s.n.closed.Load()
}

// ended reports whether s is closed. The caller holds s.mu. A request that
// Close has begun for without knowing of it (lazilyClosed) is closed first,
// with ErrClosed, as Close would have closed it: it wants nothing, so that
// needs no shard lock.
func (s *Subscription) ended() bool {
	if s.lazilyClosed() {
		s.markClosed(ErrClosed)
	}
	return s.closed.Load()
}

// enlist lists the request s in the registry, unless it is listed already,
// so that Close finds it (see the comment above it in notifier.go). The
// caller holds s.mu, and calls it before s records a want or makes its done
// signal. If Close has begun, s is closed with ErrClosed instead and enlist
// reports false. It does nothing for the other subscriptions, which New*
// listed.
func (s *Subscription) enlist() bool {
	if !s.anon || s.listed {
		return true
	}
	if s.closed.Load() {
		return false // removed before it was listed: nothing for Close to do
	}
	if !s.n.listRequest(s) {
		s.markClosed(ErrClosed)
		return false
	}
	s.listed = true
	return true
}

// closedErr is what operations on a closed subscription return.
func (s *Subscription) closedErr() error {
	if s.overflow { // ended as a slow consumer, or that end is pending (closeSlow)
		return fmt.Errorf("notifier: subscription %d ended: %w", s.id, ErrSlowConsumer)
	}
	if s.err != nil {
		return fmt.Errorf("notifier: subscription %d ended: %w", s.id, s.err)
	}
	return fmt.Errorf("notifier: subscription %d removed: %w", s.id, ErrClosed)
}

// markClosed marks s closed with err and closes out, unless s is closed
// already. The caller holds s.mu.
//
// It closes out itself, under s.mu, so that Messages() closes at the same
// instant as the wants end and Err is set (the callers end the wants under
// the same locks). That needs the drain goroutine, out's only sender while
// it runs, to be stopped first: if it is handing a message to out outside
// s.mu (handingOn), markClosed stops it (handingStopped, quit) and waits
// for it to return, which it does without s.mu or any other lock. Else it
// sends nothing before it has s.mu again, and then it sees s closed. The
// tempting ways fail: closing out with drain still in its send panics it;
// letting drain close out once it sees s closed, as was done first, closed
// Messages() only after the end had released its locks, so a reader could
// see the wants gone while Messages() was open and empty (found by review;
// TestEnd_RemoveClosesMessagesWithItsWants); and waiting for drain to return
// whatever it is doing deadlocks, as drain may be waiting for s.mu.
func (s *Subscription) markClosed(err error) {
	if s.closed.Load() {
		return
	}
	if s.anon && !s.listed {
		if err == nil && s.n.closed.Load() {
			err = ErrClosed // closed lazily already (see enlist)
		}
		s.n.counts.Add(-(oneLive + oneLoose)) // at once: see Notifier.counts
	}
	if s.overflow {
		// An operation overflowed s and will end it, but this close came
		// first: messages were dropped for slowness all the same.
		err = ErrSlowConsumer
	}
	s.err = err
	s.closed.Store(true)
	for _, o := range s.asleep {
		o.nudgeClose()
	}
	s.asleep = nil
	s.backlog.Reset()
	switch {
	case s.fn != nil:
		if !s.signal.CompareAndSwap(nil, closedSignal) {
			close(s.signal.Load().(chan ResponseMessage))
		}
	default:
		if s.draining && s.handing.CompareAndSwap(handingOn, handingStopped) {
			close(s.quit)
			<-s.exited
			s.draining = false
		}
		close(s.out)
	}
}

// accept takes a message for s, whose blocks made stale entries of s.keys
// stale (the index has ended their interests already). The message goes to
// out at once if out has room and nothing is queued before it, else to the
// backlog. The caller holds s.mu. It reports whether the message is the one
// that overflowed WithMaxPending: the caller must then end s with
// ErrSlowConsumer once its own locks are released. Messages for s between the
// overflow and the end are dropped; Err reports it.
//
// A map of keys above shrink.Floor entries is compacted here too, not only
// by the next want: a subscription that a burst of deliveries leaves idle
// would otherwise keep the burst's stale entries, and the interests they
// point to, until its next Subscribe or its end. So is a map of any size
// that the message leaves all stale, the subscription wanting nothing more:
// it is cleared, which reads no entry and keeps the map's storage (up to
// shrink.Floor entries' worth), so that a subscription that wants the same
// keys again round after round (W1) inserts them into storage of their size.
// A smaller map with live wants left waits for the next want or the end,
// and a stale entry wanted again meanwhile is replaced in place. Amortised
// O(1) per delivered block, as compact is, but each compaction is paid by
// one operation, as by one Subscribe before: under s.mu and the locks the
// hand-over holds (all the operation's shards, for a subscription with a
// delivery function; see finish).
func (s *Subscription) accept(m *ResponseMessage, stale int) (overflowed bool) {
	s.stale += stale
	if stale > 0 && (len(s.keys) > shrink.Floor || s.stale == len(s.keys)) {
		s.compact()
	}
	if s.closed.Load() || s.overflow {
		return false
	}
	if s.fn != nil {
		s.fn(*m)
		return false
	}
	if !s.draining {
		select {
		case s.out <- *m:
			return false
		default:
		}
	}
	if max := s.n.cfg.maxPending; max > 0 && s.backlog.Len() >= max {
		s.overflow = true
		return true
	}
	s.backlog.Push(*m)
	if !s.draining {
		s.draining = true
		s.exited = make(chan struct{})
		if s.quit == nil {
			s.quit = make(chan struct{})
		}
		s.n.drainers.Add(1)
		go s.drain(s.exited, s.quit)
	}
	return false
}

// drain moves the backlog into out, blocking on out, until the backlog is
// empty or s is closed. While it runs it is out's only sender, which keeps
// publish order; markClosed stops it before it closes out (handing). It
// closes exited when it returns. The message it holds while blocked on out
// has left the backlog: WithMaxPending counts the messages queued behind it.
func (s *Subscription) drain(exited, quit chan struct{}) {
	defer s.n.drainers.Done()
	defer close(exited)
	for {
		s.mu.Lock()
		if s.closed.Load() { // markClosed has closed out
			s.draining = false
			s.mu.Unlock()
			return
		}
		m, ok := s.backlog.Pop()
		if !ok {
			s.draining = false
			s.mu.Unlock()
			return
		}
		s.handing.Store(handingOn)
		s.mu.Unlock()
		select {
		case s.out <- m:
		case <-quit:
		}
		if !s.handing.CompareAndSwap(handingOn, handingOff) {
			return // handingStopped: markClosed waits for exited, holding s.mu
		}
	}
}
