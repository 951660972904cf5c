package notifier

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/carryon"
	"github.com/bitswapsync/notifier/internal/shrink"
)

// Sentinel errors. Errors returned by this package wrap them; test with errors.Is.
var (
	// ErrClosed: the Notifier was closed, or the Subscription was removed.
	ErrClosed = errors.New("notifier: closed")
	// ErrSlowConsumer: the subscription fell more than WithMaxPending messages
	// behind and was ended.
	ErrSlowConsumer = errors.New("notifier: slow consumer")
	// ErrDuplicateSession: a live subscription already has this session ID.
	ErrDuplicateSession = errors.New("notifier: duplicate session ID")
	// ErrInvalidCid: a key is cid.Undef.
	ErrInvalidCid = errors.New("notifier: undefined CID")
	// ErrNilBlock: a message holds a nil block.
	ErrNilBlock = errors.New("notifier: nil block")
)

// Blockstore is what the Notifier needs; both go-ipfs-blockstore's and boxo's
// blockstore.Blockstore satisfy it without an adapter. Get must report a
// missing block with an error for which format.IsNotFound (go-ipld-format) or
// errors.Is(err, datastore.ErrNotFound) is true, as both of those do.
type Blockstore interface {
	Has(ctx context.Context, c cid.Cid) (bool, error)
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
	PutMany(ctx context.Context, blks []blocks.Block) error
}

// Defaults for the options.
const (
	// DefaultShards: BenchmarkShards found no difference between 1 and 256
	// shards for messages of ~56 keys, which lock most shards whatever the
	// count (BENCHMARKS.md); 64 lets operations on few keys run in parallel.
	DefaultShards     = 64
	DefaultBufferSize = 32
	maxShards         = 1 << 16
)

type config struct {
	cancel     func(keys []cid.Cid)
	shards     int
	bufSize    int
	maxPending int
	metrics    context.Context // scope of WithMetrics (metrics.go); nil: no metrics
	checkMiss  bool            // WithFailedCheckAsMiss: a failed check of Subscribe or Fetch is a miss
	checkErr   func(error)     // WithFailedCheckAsMiss's f, nil for none
}

// An Option configures a Notifier. Options given invalid values panic in New's
// caller: they are programming errors.
type Option func(*config)

// WithCancelFunc sets f to receive the keys that no subscription wants any
// more, so that the client can send CANCELs for them.
//
// f is called synchronously by the operation that ended the last want of the
// keys (Publish, Subscribe, Fetch, Unsubscribe, Release, Remove, ReleaseAll or
// Close), before that operation returns, while it holds the locks of the
// shards of those keys.
// One exception: the end of a slow consumer (WithMaxPending) that the
// overflowing Publish or Subscribe could not complete at once, because
// another operation held up one of the subscription's keys (a blockstore
// call in progress, or an older waiter), is left pending and completed by
// that other operation as it finishes, by the one that ends the
// subscription's want of such a key, or by the one that makes the other
// operation's hold on it end (a Subscribe that records the want that an
// older waiter's mark waited for): f then runs on that operation's
// goroutine, for the keys of the ended subscription, after that operation
// has taken effect and before it returns, and not in the overflowing
// operation, which may have returned already (Subscription.closeSlow). Or
// by a waiter whose mark on that key held it up, as it moves its mark to
// another key it waits for: f then runs on the waiter's goroutine while it
// waits, before it takes effect.
// Either way f runs under the locks of the shards of the keys it gets:
// any later Subscribe of one of these keys returns only after f has returned,
// which is what keeps a CANCEL from overtaking a newer WANT. Operations on
// other keys in those shards wait for f too; the rest of the Notifier does
// not. So f must be fast, must not block, and must not call any method of the
// Notifier or its Subscriptions except Stats: that may deadlock. f owns keys.
// If f panics, or exits the goroutine (runtime.Goexit), the operation first
// finishes: it releases its locks and ends the subscriptions it found past
// WithMaxPending. Then the panic goes on to the operation's caller.
//
// The tempting alternative, calling f after the locks are released, lets a
// Subscribe of the same key (and its WANT) slip in before f's CANCEL.
func WithCancelFunc(f func(keys []cid.Cid)) Option {
	return func(c *config) { c.cancel = f }
}

// WithShards sets the number of index shards, a power of two in [1, 65536].
// More shards let operations on different keys run in parallel; a Publish locks
// every shard its message touches. The default is DefaultShards.
func WithShards(n int) Option {
	if n < 1 || n > maxShards || bits.OnesCount(uint(n)) != 1 {
		panic(fmt.Sprintf("notifier: WithShards(%d): want a power of two in [1, %d]", n, maxShards))
	}
	return func(c *config) { c.shards = n }
}

// WithBufferSize sets the capacity of each Messages() channel (default
// DefaultBufferSize). Messages beyond it wait in the subscription's backlog.
func WithBufferSize(n int) Option {
	if n < 0 {
		panic(fmt.Sprintf("notifier: WithBufferSize(%d): negative size", n))
	}
	return func(c *config) { c.bufSize = n }
}

// WithMaxPending bounds the backlog of messages that a subscription's channel
// could not take yet: n messages may wait, besides the channel's buffer and
// the one message being handed to the channel. A Publish that would exceed it
// ends the subscription with ErrSlowConsumer instead of blocking or dropping
// silently. 0, the default, means unbounded. The bound may be off by one:
// after the channel takes a message, the next one still counts in the
// backlog until the goroutine that feeds the channel has taken it, so a
// consumer that has just read may be ended when n messages wait besides the
// buffer, the one about to be handed included. The keys whose last want
// such an end ends go to the cancel function; without WithCancelFunc they
// are reported to nobody (see Subscription.ReleaseAll).
func WithMaxPending(n int) Option {
	if n < 0 {
		panic(fmt.Sprintf("notifier: WithMaxPending(%d): negative bound", n))
	}
	return func(c *config) { c.maxPending = n }
}

// WithFailedCheckAsMiss makes a failed blockstore check a miss: when a Get
// of Subscribe or Fetch fails with an error of the store (not a missing
// block, and not the call's own ctx ending), the call goes on as if the
// block were not stored. It records the want of that key, returns no error,
// and hands the first such error of the call, wrapped with its key, to f.
// Without this option the call fails and ends the wants it added instead
// (Subscription.Subscribe). This is what boxo's block service does with a
// Get that fails in GetBlocks: it asks the network for the block, and the
// next Publish of it delivers it. bitswapcompat builds its Notifier with it.
// A block that the store holds but failed to read, and that no Publish will
// bring again (a local add that came before the call), is then waited for
// in vain unless the caller checks again: bitswapcompat's PubSub checks the
// call's keys again later and publishes what it finds (its recheck.go).
//
// f is called at most once per call, and only for a call that returns nil
// (not for one that fails for another reason, such as ErrSlowConsumer or
// ctx, whose failed Get is then only logged), on the caller's goroutine,
// after the call has taken effect and before it returns, holding no lock
// and no reservation: it may call the Notifier. f may be nil. Either way
// the error is also logged, counted in blockstore_errors_total
// (WithMetrics) and set on the call's span, as every failed blockstore call
// is. If f panics, or exits the goroutine, the wants stay recorded (a
// request that Fetch made is removed: its caller never got it) and the
// panic goes on to the caller.
//
// The tempting alternative, calling f where the Get failed, runs it while
// the call holds the key reserved, so that f's own Subscribe or Publish of
// that key waits for ever.
func WithFailedCheckAsMiss(f func(error)) Option {
	return func(c *config) { c.checkMiss, c.checkErr = true, f }
}

// Notifier is the shared index of wants and the delivery path of received
// blocks. Create it with New; all methods are safe for concurrent use.
type Notifier struct {
	bs     Blockstore // nil: notify only
	cfg    config
	m      *meters // nil without WithMetrics (metrics.go)
	seed   maphash.Seed
	mask   uint64 // len(shards) - 1
	shards []shard

	ops    sync.Pool     // *op scratch, reused to keep the hot path allocation-free
	opSeq  atomic.Uint64 // op ids; 0 is never used
	subSeq atomic.Uint64 // Subscription.seq: the order in which subscriptions are locked together

	closed    atomic.Bool
	done      chan struct{} // closed by Close right after closed is set: wakes the waiters of operations a closed Notifier refuses
	closeOnce sync.Once
	drainers  sync.WaitGroup // running Subscription.drain goroutines
	pending   sync.WaitGroup // pending slow-consumer closes (Subscription.closeSlow), added under the subscription's lock while it is open
	parkSeq   atomic.Uint64  // generations of parked pending closes (parkEntry); 0 is never used
	inflight  sync.WaitGroup // operations in blockstore I/O (holding reservations, or a one-key Subscribe in its Get, between peek and getUnlocked's end); Add only under a shard lock, having seen closed false there, so that Close's barrier orders it before Wait
	waiting   atomic.Int64   // operations waiting for another's reservation or mark (lockFree, lockAll)
	waits     atomic.Uint64  // times an operation has begun such a wait (await), for tests

	mu       sync.Mutex // guards sessions and requests, and their peaks; a leaf: nothing is locked while it is held
	sessions map[uint64]*Subscription
	requests map[*Subscription]struct{} // the listed requests (NewRequest; see Subscription.enlist)
	// The peaks of sessions and requests: each gives back the storage of a
	// burst of subscriptions once it has shrunk to an eighth of it
	// (shrink.Fit).
	sessionsPeak, requestsPeak shrink.Peak
	// counts holds, in one word so that Stats reads both at one instant,
	// the live subscriptions, listed or not (the low 32 bits, oneLive
	// each), and those of them that are requests not listed (the high 32
	// bits, oneLoose each; see enlist). Two counters let Stats after Close,
	// which subtracts the second from the first, read them at two instants
	// between which an unlisted request was removed (or made): it reported
	// a subscription more, or one less, than ever were live (review,
	// TestStats_ExactAfterCloseWhileUnlistedRequestsEnd).
	counts atomic.Int64
}

// New returns a Notifier that stores received blocks in bs and checks bs when
// a key is subscribed. With bs == nil it only notifies: nothing is stored and
// Subscribe checks nothing. Invalid options panic where they are made (see
// Option), before New runs.
func New(bs Blockstore, opts ...Option) *Notifier {
	cfg := config{shards: DefaultShards, bufSize: DefaultBufferSize}
	for _, o := range opts {
		o(&cfg)
	}
	n := &Notifier{
		bs:       bs,
		cfg:      cfg,
		m:        newMeters(cfg.metrics),
		seed:     maphash.MakeSeed(),
		mask:     uint64(cfg.shards - 1),
		shards:   make([]shard, cfg.shards),
		sessions: make(map[uint64]*Subscription),
		requests: make(map[*Subscription]struct{}),
		done:     make(chan struct{}),
	}
	for i := range n.shards {
		n.shards[i].idx = newShardIndex()
	}
	n.ops.New = func() any { return newOp(cfg.shards) }
	return n
}

// NewSubscription returns the subscription of session sesid, which must not
// belong to another live subscription (ErrDuplicateSession); an ID may be
// reused once Remove has returned. It is safe for concurrent use, does not
// block, and returns ErrClosed after Close.
func (n *Notifier) NewSubscription(sesid uint64) (*Subscription, error) {
	return n.register(newSubscription(n, sesid, n.cfg.bufSize))
}

// NewSubscriptionFunc is NewSubscription for a subscriber that takes messages
// as they are published rather than from a channel; with f == nil the
// subscription only records wants and its messages are discarded.
//
// f is called synchronously by the operation that delivers the message
// (Publish, Subscribe, or Fetch on its general path), in publish order, while
// that operation holds the locks of the message's shards and of the
// subscription: like the cancel function, f must be fast, must not block and
// must not call any method of the Notifier or its Subscriptions except Stats.
// If f panics, or exits the goroutine, the delivering operation first finishes
// as if f had returned: the other subscriptions get their messages, the cancel
// function its keys, and no lock stays held. Then the panic goes on to the
// operation's caller, the Publish or Subscribe: a bug in f fails that call,
// not every later one. Messages() of such a subscription never yields a
// message; it is closed when the subscription ends, which makes it a done
// signal. WithMaxPending does not apply.
func (n *Notifier) NewSubscriptionFunc(sesid uint64, f func(ResponseMessage)) (*Subscription, error) {
	if f == nil {
		f = func(ResponseMessage) {}
	}
	s := newSubscription(n, sesid, -1) // no out: Messages() is a done signal
	s.fn = f
	return n.register(s)
}

// NewInterest returns a subscription that records the interest of session
// sesid, as boxo's SessionInterestManager does: a want of an interest
// subscription outlives the delivery of its block and ends only by
// Unsubscribe, Release, Remove, ReleaseAll or Close. It receives no messages
// (Messages() is only a done signal) and its Subscribe does not consult the
// blockstore, since there is nobody to hand a found block to. Its wants count
// as wants everywhere else: a remote block that it wants is stored and
// delivered to the other subscriptions that want it, and the cancel function
// hears of a key only once the interest subscriptions have let go of it too.
// Interested and AppendInterested read them. The session ID follows the
// rules of NewSubscription. It is safe for concurrent use, does not block,
// and returns ErrClosed after Close.
func (n *Notifier) NewInterest(sesid uint64) (*Subscription, error) {
	s := newSubscription(n, sesid, -1)
	s.fn = func(ResponseMessage) {}
	s.keeps = true
	return n.register(s)
}

// NewRequest is NewSubscriptionFunc for one request rather than a session: the
// subscription has no session ID (ID returns 0) and takes no part in the
// uniqueness of session IDs, so it never collides with a session. It is what
// a PubSub-style Subscribe call needs. f follows the rules of
// NewSubscriptionFunc. It is safe for concurrent use, does not block, takes
// no lock, and returns ErrClosed after Close.
func (n *Notifier) NewRequest(f func(ResponseMessage)) (*Subscription, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	if f == nil {
		f = func(ResponseMessage) {}
	}
	s := n.newRequest(f)
	n.m.refresh(n) // observe.go hook
	return s, nil
}

// newRequest is NewRequest once the checks are done.
func (n *Notifier) newRequest(f func(ResponseMessage)) *Subscription {
	s := newSubscription(n, 0, -1)
	s.fn = f
	s.anon = true
	n.counts.Add(oneLive + oneLoose)
	return s
}

// The units of Notifier.counts.
const (
	oneLive  = 1       // a live subscription
	oneLoose = 1 << 32 // a live request not listed (see enlist)
)

func (n *Notifier) register(s *Subscription) (*Subscription, error) {
	defer n.m.refresh(n) // observe.go hook; runs after n.mu.Unlock
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed.Load() {
		return nil, ErrClosed
	}
	if _, dup := n.sessions[s.id]; dup {
		return nil, fmt.Errorf("notifier: session %d: %w", s.id, ErrDuplicateSession)
	}
	n.sessions[s.id] = s
	n.sessionsPeak.Grew(len(n.sessions))
	n.counts.Add(oneLive)
	return s, nil
}

// listRequest lists the request s in the registry (Subscription.enlist,
// which holds s.mu) and reports true, unless Close has begun: then it lists
// nothing and reports false. It checks under n.mu, where Close sets closed
// before it collects the registry (see above).
func (n *Notifier) listRequest(s *Subscription) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed.Load() {
		return false
	}
	n.requests[s] = struct{}{}
	n.requestsPeak.Grew(len(n.requests))
	n.counts.Add(-oneLoose) // counted as live and loose since NewRequest
	return true
}

// unregister lets s go from the registry so that its session ID can be reused.
func (n *Notifier) unregister(s *Subscription) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s.anon {
		if _, ok := n.requests[s]; ok {
			delete(n.requests, s)
			n.requests = shrink.Fit(n.requests, &n.requestsPeak)
			n.counts.Add(-oneLive)
		}
		return
	}
	if n.sessions[s.id] == s {
		delete(n.sessions, s.id)
		n.sessions = shrink.Fit(n.sessions, &n.sessionsPeak)
		n.counts.Add(-oneLive)
	}
}

// Stats is a snapshot of the index's gauges.
type Stats struct {
	Subscriptions int // live subscriptions
	Keys          int // distinct keys wanted by at least one subscription
	Wants         int // (subscription, key) pairs
}

// Stats returns a snapshot of the gauges. It takes no lock, so it is cheap and
// may be called from the cancel function; the three gauges are read one after
// the other, not at one instant.
func (n *Notifier) Stats() Stats {
	var st Stats
	for { // closed as it was when counts was read: it changes once, so this loops at most twice
		closed := n.closed.Load()
		c := n.counts.Load()
		if n.closed.Load() != closed {
			continue
		}
		st.Subscriptions = int(c % oneLoose)
		if closed {
			st.Subscriptions -= int(c / oneLoose) // closed lazily by Close (see enlist)
		}
		break
	}
	for i := range n.shards {
		st.Keys += int(n.shards[i].idx.keys.Load())
		st.Wants += int(n.shards[i].idx.pairs.Load())
	}
	return st
}

// Close ends every subscription (their Err is ErrClosed, or ErrSlowConsumer
// for one that had overflowed), reports their keys to the cancel function,
// and waits until every operation in progress has taken effect and every
// goroutine of the Notifier has exited; the metrics gauges
// (WithMetrics) then equal Stats. (An operation in progress may return after
// Close does, with the result of the instant it took effect, and its log
// line and metrics come then. A Publish that took effect before Close only
// hands its messages to subscriptions, which Close has ended, so they are
// dropped.) After Close, Publish, Subscribe and NewSubscription return
// ErrClosed; so does a Publish, Subscribe or Fetch that waits for another
// operation on its keys when Close begins (one that has not taken effect),
// at once. Close is idempotent and safe for concurrent use, but not from
// inside the cancel function or a delivery function (NewSubscriptionFunc,
// NewRequest), which must not call back into the Notifier: it may never
// return. Every call returns once the Notifier is fully closed. It does not
// close the blockstore. Close is not one instant: it refuses new operations
// before it has ended every subscription (doc.go, "Not one instant").
func (n *Notifier) Close() error {
	n.closeOnce.Do(n.close)
	return nil
}

func (n *Notifier) close() {
	// closed is set under n.mu: register and enlist read it under n.mu, so
	// a subscription they add is one Close collects below, and neither adds
	// one once Stats can see closed. Set before n.mu was taken, a session
	// registered or a request listed meanwhile raised Stats.Subscriptions
	// after Close had begun, or lowered it for an instant (the request was
	// counted as closed lazily before it was counted as listed). Found by
	// review, with TestStats_NeverRisesOnceCloseHasBegun.
	n.mu.Lock()
	n.closed.Store(true)
	close(n.done)
	subs := slices.AppendSeq(slices.Collect(maps.Values(n.sessions)), maps.Keys(n.requests))
	n.mu.Unlock()
	n.closeAll(subs)
}

// closeAll ends subs, then waits for what Close waits for, and refreshes
// the gauges: Stats stops counting the requests that Close ends without
// listing them (see enlist) whether or not a close above refreshed them. If
// the cancel function panics or exits the goroutine while one of subs is
// closed, carryon.Each goes on with the rest before the panic goes on, as
// unwind does for an operation: closeOnce counts the panicking Close as
// done, so no later Close would. Found by review, with
// TestClose_PanickingCancelFunctionClosesEverything.
func (n *Notifier) closeAll(subs []*Subscription) {
	carryon.Each(subs, func(s *Subscription) { s.close(ErrClosed, false) }, func() {
		n.barrier()       // an operation that locked a shard before closed was set has finished; later ones see closed
		n.inflight.Wait() // operations in blockstore I/O, which hold no lock: they were counted under one, before the barrier
		// Pending closes, which the operations above may be resuming: every
		// subscription is closed, so none is added. No test can tell this
		// wait is there. A pending close parks only while its subscription
		// is open and wants the busy key, so that subscription is listed,
		// and the loop above has ended it; one still unfinished here wants
		// nothing, and resumed (by an operation's putOp, after barrier and
		// inflight stopped waiting for that operation) it finds s closed and
		// changes nothing: no cancel or delivery function runs, and Stats,
		// Err and Messages() stay as they are
		// (TestClose_PendingEndResumedAfterCloseChangesNothing). The wait
		// only makes Close return after its op is back in the pool and its
		// hooks have run.
		n.pending.Wait()
		n.drainers.Wait()
		n.m.settle(n) // observe.go's gauges, final when Close returns
	})
}

// Wanted reports whether any subscription wants k, of any kind. It takes k's
// shard lock, so it waits for operations on that shard (and for a cancel
// function running there); it is safe for concurrent use. An undefined k is
// wanted by nobody.
func (n *Notifier) Wanted(k cid.Cid) (wanted bool) {
	if k.Defined() {
		n.read(k, func(idx *shardIndex) { wanted = idx.wanted(k) })
	}
	return wanted
}

// Interested reports whether an interest subscription (NewInterest) wants k.
// It locks as Wanted does.
func (n *Notifier) Interested(k cid.Cid) (held bool) {
	if k.Defined() {
		n.read(k, func(idx *shardIndex) { held = idx.held[k] != nil })
	}
	return held
}

// AppendInterested appends to ids the session IDs of the interest
// subscriptions that want k, in no particular order, and returns the
// extended slice. It locks as Wanted does.
func (n *Notifier) AppendInterested(ids []uint64, k cid.Cid) []uint64 {
	if !k.Defined() {
		return ids
	}
	n.read(k, func(idx *shardIndex) {
		if e := idx.held[k]; e != nil {
			for _, s := range e.subs {
				ids = append(ids, s.id)
			}
		}
	})
	return ids
}

// HasCancelFunc reports whether the Notifier was built WithCancelFunc: then
// the keys that nobody wants any more go to that function, and a layer
// above must not report them for CANCELs a second time (bitswapcompat's
// RemoveSession does not).
func (n *Notifier) HasCancelFunc() bool { return n.cfg.cancel != nil }
