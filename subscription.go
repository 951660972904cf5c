package notifier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	format "github.com/ipfs/go-ipld-format"

	"github.com/bitswapsync/notifier/internal/carryon"
	"github.com/bitswapsync/notifier/internal/fifo"
	"github.com/bitswapsync/notifier/internal/shrink"
)

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
	mu       sync.Mutex
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

// Subscribe makes the subscription want keys and, in the same atomic step,
// looks each newly wanted key up in the blockstore: a block already there is
// delivered at once, to this subscription and to every other one waiting for
// it, as if it had been published locally. Once Subscribe has returned nil,
// the block of each key reaches the subscription unless it stops wanting the
// key first: a block stored before (with a blockstore) or published after.
// A notify-only Notifier (New(nil)) stores nothing and checks nothing, so
// a block published just before Subscribe took effect does not reach it.
//
// Keys already wanted are ignored; duplicates are fine. An undefined key
// fails the call with ErrInvalidCid before anything changes. The blockstore
// is checked holding no lock of the Notifier, with the keys the subscription
// does not want yet reserved, and the wants are recorded after it: so if the
// blockstore fails, the call has added no want (and, those keys being
// reserved, no other operation has satisfied one meanwhile), nothing
// changes, and the error is returned wrapped. If a want of the subscription
// among keys ends during the check, the call starts over, as old as it
// was, or returns ctx's error if ctx is done. A call for
// one key that nobody else wants reserves nothing: it commits only if no
// other operation has touched the key during its Get, and else checks again
// with the key reserved (see doc.go), so operations on the key never wait
// for that first Get. The keys
// are looked up one Get at a time: against a blockstore that others (a
// garbage collection) change during the call, each key is seen as it was at
// its own Get. Subscribe blocks only for the blockstore and for operations
// holding the same shard locks or reservations on the keys it does not want
// yet, or older ones waiting for such a reservation with one of those keys
// (ctx ends that wait, and so does the end of the subscription): a key it
// wants already holds it up for no blockstore call (G11).
// After Close it returns ErrClosed, however the subscription ended (G7),
// and so after Remove; after a slow-consumer end, ErrSlowConsumer, as Err
// does, whatever ctx's state (also after a Remove that came between an
// overflow and its end; Err says ErrSlowConsumer after such a Close too,
// Subscribe ErrClosed). Until that end the
// subscription is live, as it is until any end: a Subscribe between an
// overflow and its end returns nil and adds its wants, which the end releases
// (reporting to the cancel function those that were the last of their key),
// and the blocks it finds are dropped as every message of that window is; Err
// then reports ErrSlowConsumer. A Subscribe whose found blocks overflow the
// subscription returns ErrSlowConsumer, even while the end it causes is
// pending behind another operation (closeSlow). An undefined key is refused
// with ErrInvalidCid first, ended or not.
func (s *Subscription) Subscribe(ctx context.Context, keys ...cid.Cid) error {
	if err := validateKeys("keys", keys); err != nil {
		return err
	}
	n := s.n
	if n.closed.Load() {
		return ErrClosed
	}
	if s.closed.Load() { // before ctx: an ended subscription says why, as its doc says (review)
		s.mu.Lock()
		err := s.closedErr()
		s.mu.Unlock()
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("notifier: subscribe: %w", err)
	}
	var p probe
	p.begin(n, ctx) // observe.go hook
	if len(keys) == 1 {
		if handled, err := s.subscribeOne(ctx, keys[0], &p); handled {
			return err
		}
	}
	return s.subscribeAll(ctx, keys, p)
}

// subscribeAll is Subscribe on the general path, with the keys reserved; p
// carries the time of a Get that subscribeOne or Fetch made before it.
//
// An attempt that starts over keeps the first one's op id: it is as old as
// the call, so operations that started after the call still wait behind it,
// and it behind none of them. With a new id, the next attempt waited behind
// a Publish that had started during the first one, for that Publish's wait
// for a stalled PutMany (review, TestIO_SubscribeKeepsItsPlaceWhenItStartsOver).
func (s *Subscription) subscribeAll(ctx context.Context, keys []cid.Cid, p probe) error {
	var id uint64
	for {
		again, err := s.subscribeOnce(ctx, keys, &p, &id)
		if !again {
			return err
		}
		if err := ctx.Err(); err != nil { // nothing changed: as a wait that ctx ends
			p.end(opSubscribe, len(keys), 0, 0) // observe.go hook
			return fmt.Errorf("notifier: subscribe: %w", err)
		}
	}
}

// subscribeOnce is one attempt of subscribeAll. It reports again, with p
// holding the attempt's probe, when the commit found a key the subscriber
// wanted at the plan no longer wanted (errStartOver); then nothing changed.
// id is the op id of the first attempt, 0 before it.
func (s *Subscription) subscribeOnce(ctx context.Context, keys []cid.Cid, p *probe, id *uint64) (again bool, err error) {
	n := s.n
	o := n.getOp()
	defer n.putOp(o)
	if *id == 0 {
		*id = o.id
	} else {
		o.id = *id
	}
	o.probe = *p // with the time of subscribeOne's Get, or of an earlier attempt's, if it started over
	defer func() {
		if again {
			*p = o.probe
		} else {
			o.probe.done(opSubscribe, o) // observe.go hook
		}
	}()
	o.setKeys(n, s, keys)
	o.scope = waitUnwanted
	if err := n.run(ctx, o, &subscribeSteps); err != nil {
		return errors.Is(err, errStartOver), err
	}
	if slices.Contains(o.slow, s) { // its own blockstore hits overflowed it
		s.mu.Lock()
		defer s.mu.Unlock()
		return false, s.closedErr()
	}
	return false, nil
}

// subscribeSteps: from acquire until the hand-over, the keys are s's alone:
// their shard locks are held but for the blockstore check, during which the
// keys it checks are reserved, and the keys s wanted already are looked at
// again at the commit (commitSubscribe). So no other operation on these keys
// can tell in which order the steps run. Checking the blockstore before recording the wants spares a
// found key the trip into the index and out again.
var subscribeSteps = steps{acquire: acquireOpen, plan: planSubscribe, io: checkBlockstore, commit: commitSubscribe}

func planSubscribe(n *Notifier, o *op) error {
	s := o.sub
	if err := s.candidates(o); err != nil {
		return err
	}
	// An interest subscription has nobody to hand a found block to.
	o.io = n.bs != nil && !s.keeps && len(o.hits) > 0
	o.onlyHits = o.io
	return nil
}

// errStartOver: a Subscribe's commit found that a key its subscriber wanted
// at the plan is no longer wanted; subscribeAll starts over.
var errStartOver = errors.New("notifier: subscribe: start over")

func checkBlockstore(ctx context.Context, n *Notifier, o *op) error {
	t := o.probe.clock() // observe.go hook
	err := o.sub.get(ctx, o)
	o.probe.storeDone(ctx, t, 0, err) // observe.go hook
	return err
}

// commitSubscribe records the wants of the keys that the check did not
// find, after checking that the subscriber still wants the keys it wanted at
// the plan.
//
// The check reserves only the keys it reads (op.onlyHits): a Subscribe of
// A and B by a subscription that wants A already does nothing for A, and
// reserving A too made every operation on A wait for the Get of B, which
// none of them needs (G11; review, TestIO_SubscribeHoldsUpNoKeyItDoesNotCheck).
// Unreserved, A's want may end during the check, by a delivery, an
// Unsubscribe or a Release. Committing then would fit no instant: before the
// end, a reader that saw the end could not see B unwanted; after it, the
// Subscribe should have wanted A anew and checked it. So the Subscribe starts
// over, with nothing changed, and checks A the next time.
func commitSubscribe(n *Notifier, o *op) error {
	if o.io && len(o.held) > 0 {
		s := o.sub
		locked := false
		for _, i := range o.held {
			k := o.resKeys[i]
			e := n.shards[o.keyShards[i]].idx.lookupFor(k, s)
			if e == nil || !s.listedIn(e, k, &locked) {
				if locked {
					s.mu.Unlock()
				}
				return errStartOver
			}
		}
		if locked {
			s.mu.Unlock()
		}
	}
	return o.sub.want(o)
}

// subscribeOne is Subscribe of the one key k, when nobody of s's kind wants
// k and no operation reserves or waits for it: then a found block is for s
// alone and a missing one adds one want, and the call can skip the op, the
// reservation and the hand-over. It checks the blockstore holding no lock
// and commits only if no operation has touched k meanwhile (see peek, in
// shard.go, for why that is the same atomic step). It reports handled false,
// having changed nothing, when the caller must take the general path.
func (s *Subscription) subscribeOne(ctx context.Context, k cid.Cid, p *probe) (handled bool, err error) {
	n := s.n
	if s.keeps || n.bs == nil || s.closed.Load() {
		return false, nil
	}
	sh, ver, wanted, ok := n.peek(k) // s.keeps is false
	if !ok {
		return false, nil
	}
	blk, err := n.getUnlocked(ctx, k, p)
	if err == nil && blk != nil {
		// A hit commits under s.mu alone, unless someone of the other kind
		// wanted k at peek or s has a delivery function (see peek).
		var handled, overflowed bool
		switch {
		case s.fn != nil:
			handled, overflowed, err = s.commitHitFunc(sh, k, ver, blk, p)
		case wanted:
			handled, overflowed, err = s.commitHitLocked(sh, k, ver, blk)
		default:
			handled, overflowed, err = s.commitHit(&n.shards[sh].idx, k, ver, blk)
		}
		if !handled {
			return false, nil
		}
		return true, s.endOne(p, blk, overflowed, err)
	}
	return n.missed(s, sh, k, ver, err, p)
}

// endOne ends subscribeOne once it has committed: it ends s if the block
// found, blk, overflowed WithMaxPending, reports the call to the observers
// and refreshes the gauges after a want added. err is the commit's and is
// returned, or s's end if it overflowed.
func (s *Subscription) endOne(p *probe, blk blocks.Block, overflowed bool, err error) error {
	n := s.n
	delivered := 0
	if blk != nil && (err == nil || overflowed) { // counted as the general path counts it (handedOwn)
		delivered = 1
	}
	defer p.end(opSubscribe, 1, delivered, 0) // observe.go hook; deferred: also if the cancel function panics in the close below
	if overflowed {
		func() {
			defer n.closedSlow(p, s) // observe.go hook; deferred, as above
			s.closeSlow()
		}()
		s.mu.Lock()
		err = s.closedErr()
		s.mu.Unlock()
	}
	if n.m != nil && blk == nil && err == nil {
		n.m.refresh(n) // a want added: the gauges
	}
	return err
}

// commitHit is the commit of subscribeOne when Get found the block, blk:
// under s.mu, it hands blk to s if k's version, read from x, k's shard
// index, is still ver. The caller need not hold k's shard lock: a hit adds
// no want, so it changes nothing that the shard lock guards, and the
// version tells it that no operation has named k since peek (see peek in
// shard.go, which also says when the caller must hold it all the same). If
// the version moved, handled is false and nothing changes. It reports whether
// the block overflowed WithMaxPending (see accept). If s is closed, nothing
// changes and err says so.
func (s *Subscription) commitHit(x *shardIndex, k cid.Cid, ver uint64, blk blocks.Block) (handled, overflowed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if x.version(k) != ver {
		return false, false, nil
	}
	if s.ended() {
		return true, false, s.closedErr()
	}
	return true, s.accept(&ResponseMessage{Blocks: []blocks.Block{blk}}, 0), nil
}

// commitHitLocked is commitHit under k's shard lock, sh, which it takes
// again if k's version is still ver (relock), and releases even if s's
// delivery function panics or exits the goroutine.
func (s *Subscription) commitHitLocked(sh int32, k cid.Cid, ver uint64, blk blocks.Block) (handled, overflowed bool, err error) {
	n := s.n
	if !n.relock(sh, k, ver) {
		return false, false, nil
	}
	defer n.unlockShard(sh)
	return s.commitHit(&n.shards[sh].idx, k, ver, blk)
}

// commitHitFunc is commitHitLocked for a subscription with a delivery
// function, which the commit calls. Should it panic or exit the goroutine, p
// is ended first: the Subscribe is observed (subscribe_seconds, its span
// event) as one on the general path is, by run's deferred call.
func (s *Subscription) commitHitFunc(sh int32, k cid.Cid, ver uint64, blk blocks.Block, p *probe) (handled, overflowed bool, err error) {
	returned := false
	defer func() {
		if !returned {
			p.end(opSubscribe, 1, 1, 0) // observe.go hook: the block was handed to the function
		}
	}()
	handled, overflowed, err = s.commitHitLocked(sh, k, ver, blk)
	returned = true
	return handled, overflowed, err
}

// commitWant is the commit of subscribeOne when Get found no block, under
// k's shard lock, x being that shard's index: it records s's want of k. If
// s is closed, nothing changes and err says so.
func (s *Subscription) commitWant(x *shardIndex, k cid.Cid) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended() || !s.enlist() {
		return s.closedErr()
	}
	// No operation to take over parked closes (op.letGo), and none is
	// needed. wakeSubscribes may find marks of waiting Subscribes of s on
	// k (one can appear without a version bump: a dormant mark of a closed
	// interest subscription's waiting Subscribe holds again, and another
	// waiter of s marks k behind it), but no close can be parked on such a
	// mark for k: parking there needs a non-interest want of k, which
	// bumps the version, and the version has not moved since peek found k
	// alone. Were one parked there anyway, it would stay with its
	// Subscribe until that ends (putOp): a delay, never a loss.
	s.record(k, x.add(k, nil, s, nil))
	s.compact()
	return nil
}

// record enters k in s.keys with its interest e. The caller holds s.mu and
// k's shard lock, and has checked that s does not want k.
func (s *Subscription) record(k cid.Cid, e *interest) {
	if s.keys == nil {
		s.keys = make(map[cid.Cid]*interest)
	}
	before := len(s.keys)
	s.keys[k] = e
	if len(s.keys) == before && s.stale > 0 { // replaced an entry: a stale one, as only those may be there
		s.stale--
	}
	s.keysPeak.Grew(len(s.keys))
}

// candidates puts in o.hits, once each, the keys that s does not want yet,
// with their interest in the index (nil if nobody wants them). The caller
// holds their shard locks, so none of that can change until want: only
// operations holding a key's shard lock add or end a want of it.
//
// s wants k exactly when the index lists s under k, so a key nobody wants
// needs no look at s.keys, nor s.mu: a request for keys not wanted yet, the
// common case, takes s.mu once, in want. A closed s is refused here, before
// the blockstore is consulted; want checks again under s.mu, since s may end
// in between.
func (s *Subscription) candidates(o *op) error {
	if s.closed.Load() {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closedErr()
	}
	keys := o.resKeys
	locked := false
	for i, k := range keys {
		sh := o.keyShards[i]
		e := s.n.shards[sh].idx.lookupFor(k, s)
		if e != nil && s.listedIn(e, k, &locked) {
			o.held = append(o.held, int32(i))
			continue
		}
		if len(keys) > 1 && o.repeated(k) {
			continue
		}
		o.hits = append(o.hits, hit{key: k, e: e, shard: sh, kind: kindBlock})
	}
	if locked {
		s.mu.Unlock()
	}
	return nil
}

// listedIn reports whether s is among e's subscriptions, e being the interest
// in k. A short list is scanned; a long one is answered from s.keys, taking
// s.mu once (*locked) for the rest of candidates. The caller holds k's shard.
func (s *Subscription) listedIn(e *interest, k cid.Cid, locked *bool) bool {
	const scan = 8
	if len(e.subs) <= scan {
		return slices.Contains(e.subs, s)
	}
	if !*locked {
		s.mu.Lock()
		*locked = true
	}
	return s.keys[k] == e
}

// get fills in the blocks of the candidates that the blockstore has.
func (s *Subscription) get(ctx context.Context, o *op) error {
	bs := s.n.bs
	for i := range o.hits {
		h := &o.hits[i]
		blk, err := bs.Get(ctx, h.key)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("notifier: subscribe: check blockstore for %s: %w", h.key, err)
		}
		if err == nil {
			h.blk = blk
		}
	}
	return nil
}

func isNotFound(err error) bool {
	return format.IsNotFound(err) || errors.Is(err, datastore.ErrNotFound)
}

// want records the wants of the candidates that check did not find, and
// keeps in o.hits the found ones, to deliver: a found key that others want
// joins their interest (their wants end with s's); one that nobody wants
// stays out of the index, for s alone (o.self). When every found key is for
// s alone, want hands them to s itself and leaves o.hits empty. The caller
// holds the candidates' shard locks. If s is closed, nothing changes.
func (s *Subscription) want(o *op) error {
	if o.lockShared() {
		// Found blocks that others want too: route delivers them to s,
		// which stays locked from here until its message is queued.
		err := s.wantLocked(o)
		if err != nil {
			o.unlockShared()
		}
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wantLocked(o)
}

// wantLocked is want under s.mu.
func (s *Subscription) wantLocked(o *op) error {
	if s.ended() {
		return s.closedErr()
	}
	if !s.listed && s.anon && slices.ContainsFunc(o.hits, func(h hit) bool { return h.blk == nil || h.e != nil }) && !s.enlist() {
		return s.closedErr() // a want to record, and Close has begun
	}
	o.self[0] = s
	found, shared := 0, 0
	for i := range o.hits {
		h := o.hits[i]
		if h.blk != nil && h.e == nil {
			o.hits[found] = h // for s alone
			found++
			continue
		}
		e := s.n.shards[h.shard].idx.add(h.key, h.e, s, o)
		s.record(h.key, e) // candidates skipped the keys s wants
		if h.blk != nil {
			h.e = e
			o.hits[found] = h
			found++
			shared++
		}
	}
	clear(o.hits[found:])
	o.hits = o.hits[:found]
	s.compact()
	if found > 0 && shared == 0 {
		// The common case, a request for stored blocks that nobody else
		// waits for: hand them over under the s.mu already held.
		blks := make([]blocks.Block, found)
		for i := range o.hits {
			blks[i] = o.hits[i].blk
		}
		clear(o.hits)
		o.hits = o.hits[:0]
		o.probe.handedOwn(found) // observe.go hook
		if s.accept(&ResponseMessage{Blocks: blks}, 0) {
			o.slow = append(o.slow, s)
		}
	}
	return nil
}

// compact deletes the stale entries of s.keys once they outnumber the live
// ones (and 64), or all of them, whatever their number, once there is no live
// one, which keeps their cost amortised O(1) per delivered block. The caller
// holds s.mu. stale is exact: an operation that ends interests of
// s's keys holds s.mu from before it ends them (route locks its targets
// first) until accept has counted them, so no one holding s.mu finds an
// entry ended but not yet counted (TestStaleKeys_DeliveryCompactionKeepsWants
// and ...UnderStress check it), and it never runs ahead: an operation counts
// for s only the interests it ends that s's entries point to (s is among an
// interest's subscribers exactly while its entry points to it; a block found
// for s alone has no interest: TestStaleKeys_MixedHitsCountOnlyEndedInterests),
// an interest ends once, and an entry leaves the count as it leaves the map
// (record, commitRelease). A map whose entries are all stale is cleared without
// reading them, which relies on that: were stale to run ahead, the clear
// would drop live wants.
func (s *Subscription) compact() {
	switch {
	case s.stale > 0 && s.stale == len(s.keys): // s wants nothing: clear, reading no entry
		clear(s.keys)
	case s.stale <= 64 || s.stale <= len(s.keys)/2:
		return
	default:
		maps.DeleteFunc(s.keys, func(_ cid.Cid, e *interest) bool { return e.ended.Load() })
	}
	s.keys = shrink.Fit(s.keys, &s.keysPeak)
	s.stale = 0
}

// Unsubscribe ends the subscription's wants of keys; keys it does not want are
// ignored. Keys that nobody wants any more go to the cancel function before
// Unsubscribe returns. It is safe for concurrent use and blocks only for
// other operations on the same shards, and for an operation whose blockstore
// call holds a reservation on one of keys that the subscription wants, until
// that call returns, or for an older operation waiting for such a call with
// one of those keys (waits are first come, first served: see doc.go). A key
// it does not want holds it up for no blockstore call (G11).
func (s *Subscription) Unsubscribe(keys ...cid.Cid) { s.release(keys, false) }

// Release is Unsubscribe that also returns the keys whose last want it ended,
// each once, in no particular order: for an interest subscription
// (NewInterest), the keys that no interest subscription wants any more — what
// boxo's SessionInterestManager.RemoveSessionWants returns — whatever other
// subscriptions still want them; for any other subscription, the keys that
// nobody wants any more, which also go to the cancel function. The result
// is computed under the shard locks of keys, so of several concurrent
// operations exactly one reports a key. The caller owns the slice.
func (s *Subscription) Release(keys ...cid.Cid) []cid.Cid { return s.release(keys, true) }

func (s *Subscription) release(keys []cid.Cid, report bool) []cid.Cid {
	if len(keys) == 0 {
		return nil
	}
	n := s.n
	o := n.getOp()
	defer n.putOp(o)
	o.setKeys(n, s, keys)
	o.scope = waitWanted
	_ = n.run(context.Background(), o, &releaseSteps) // cannot fail: it neither refuses Close nor has a deadline
	return o.report(report)
}

// releaseSteps: Unsubscribe and Release need no blockstore; their commit
// ends the wants.
var releaseSteps = steps{acquire: acquireAny, commit: commitRelease}

func commitRelease(_ *Notifier, o *op) error {
	s := o.sub
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range o.resKeys {
		e := s.keys[k]
		if e == nil {
			continue
		}
		delete(s.keys, k)
		s.keys = shrink.Fit(s.keys, &s.keysPeak)
		if e.ended.Load() {
			s.stale = max(s.stale-1, 0)
			continue
		}
		s.endWant(o, k, o.keyShards[i])
	}
	return nil
}

// endWant ends s's want of k in the index. If that was k's last want it
// queues k for the cancel function; if it was the last of s's kind (see
// Release), it adds k to o.freed. The caller holds k's shard lock and s.mu.
func (s *Subscription) endWant(o *op, k cid.Cid, sh int32) {
	x := &s.n.shards[sh].idx
	_, kindLast, last := x.endWant(k, s)
	x.wakeStaleMarks(k, s, o)
	if last {
		o.cancels = append(o.cancels, k)
		o.keep.Add(int(sh))
	}
	if last || (kindLast && s.keeps) {
		o.freed = append(o.freed, k)
	}
}

// Wants reports whether the subscription wants k now. It takes k's shard
// lock, so it waits for operations on that shard; it is safe for concurrent
// use and returns false once the subscription has ended.
func (s *Subscription) Wants(k cid.Cid) (in bool) {
	if !k.Defined() {
		return false
	}
	s.n.read(k, func(idx *shardIndex) {
		e := idx.lookupFor(k, s)
		if e == nil {
			return
		}
		locked := false
		in = s.listedIn(e, k, &locked)
		if locked {
			s.mu.Unlock()
		}
	})
	return in
}

// AppendWanted appends to dst the keys of keys that the subscription wants
// now, in their order, and returns the extended slice. It takes only the
// subscription's own lock, once for all keys, and no shard lock: it is what
// a session asks of each message it receives, for many keys at a time. Every
// want of a subscription begins and ends under that lock (a delivery locks
// its targets before it ends their wants, and a Subscribe that found blocks
// others want locks them before it records its wants), so the answer is one
// snapshot, taken at one instant: an operation it sees as done has queued its
// messages to the subscription, though its cancel function may not have run
// yet (doc.go, "Not one instant"). It is safe for concurrent use; undefined
// keys and a closed subscription want nothing.
func (s *Subscription) AppendWanted(dst, keys []cid.Cid) []cid.Cid {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if e := s.keys[k]; e != nil && !e.ended.Load() {
			dst = append(dst, k)
		}
	}
	return dst
}

// Remove ends every want of the subscription, reports the keys nobody wants
// any more to the cancel function, and closes Messages(): the messages in the
// subscription's backlog (those its channel's buffer could not take) are
// dropped, but for the one that its goroutine may be handing to the channel
// as Remove begins, which may still reach the buffer; those in the buffer
// can still be read before the channel reports closed (as after Close). When Remove returns, Messages() is
// closed and the session ID may be reused. Remove is idempotent, safe for
// concurrent use, and blocks only for other operations on the subscription's
// shards, and for an operation whose blockstore call holds a reservation on
// one of its keys, until that call returns, or for an older operation waiting
// for such a call with one of its keys (waits are first come, first served:
// see doc.go). It must not be called from the cancel function or a delivery
// function (see WithCancelFunc and NewSubscriptionFunc).
func (s *Subscription) Remove() { s.close(nil, false) }

// ReleaseAll is Remove that also returns the keys whose last want it ended,
// as Release does. A second call, or a call after Close, returns nil. So
// does a call after any other end of s, or while one is under way: an end as
// a slow consumer (WithMaxPending), Remove, or Close. That holds even if the
// call is the one that ends s: a ReleaseAll that waits behind a busy key
// may finish an end that began before it, and then it returns nil all the
// same (review, TestReleaseAll_FinishingAPendingSlowEndReportsNothing). Of
// ends that race, the first to begin returns the keys only if it is also
// the one that ends s. The keys whose last want such an end ended are
// reported only to the cancel function; without WithCancelFunc, nobody
// learns them. A client that sends CANCELs for them uses WithCancelFunc
// (review, TestReleaseAll_AfterAnotherEndReportsNothing).
func (s *Subscription) ReleaseAll() []cid.Cid { return s.close(nil, true) }

// close closes s with err, unless it is closed already, and ends its wants,
// in one critical section over the shards of its keys: no operation sees s
// closed but still in the index, nor the wants gone while out is open
// (markClosed). It returns once s is closed, whichever call closed it, and
// its drain goroutine, if one ran, has returned, with the keys of o.freed if
// report is set.
func (s *Subscription) close(err error, report bool) []cid.Cid {
	var first bool
	if s.closeIdle(err, &first) {
		return nil
	}
	report = report && first
	n := s.n
	o := n.getOp()
	defer n.putOp(o)
	o.sub, o.why, o.closing = s, err, true
	defer func() { // deferred: also if the cancel function panics, drain has returned before the panic goes on
		if o.exited != nil {
			<-o.exited // drain sees s closed and returns; it needs no lock we hold
		}
	}()
	_ = n.run(context.Background(), o, &closeSteps) // cannot fail: no blockstore, no deadline
	return o.report(report)
}

// closeSlow ends s as a slow consumer, for the operation that overflowed it
// (finish, endOne), which has released its own locks. It does not wait: if
// another operation holds up a key that s wants (a reservation for a
// blockstore call, or an older waiter's mark), the close is left pending,
// marking the keys it found busy as a waiting close does, and the
// operation that holds it up finishes it when done (putOp), or the one that
// ends s's want of such a key, or that makes the holder's mark stop
// holding (op.letGo). So a Publish that overflows s returns at once, even if
// a key of s is reserved by a stalled PutMany (G6, G11). Until the end, s
// is live but drops its messages; Err, Messages() and the wants change
// together, at the end (markClosed), so Err is nil while it is pending
// (TestSlowConsumerEnd_AtomicWithItsWants). A Remove or Close of s in
// between waits behind the pending close's marks, or completes the end
// itself, as it would behind a waiting close; either way Err then reports
// ErrSlowConsumer (markClosed).
func (s *Subscription) closeSlow() {
	if s.closeIdle(ErrSlowConsumer, nil) {
		return
	}
	n := s.n
	o := n.getOp()
	o.sub, o.why, o.closing = s, ErrSlowConsumer, true
	n.attemptClose(o, nil)
}

// attemptClose is one attempt of the pending close o, holding no lock: it
// ends s, or parks o again (lockAllOrPark). Once s is ended it waits for the
// drain goroutine, as close does, and puts o back in the pool; also if the
// cancel function panics. The pending closes that o held up in turn are
// resumed then (putOp), or, with queue set, appended to it for the caller,
// Notifier.resume, to resume.
func (n *Notifier) attemptClose(o *op, queue *[]parkEntry) {
	if !o.sub.lockAllOrPark(o, true) {
		return
	}
	counted := o.pending
	defer func() {
		if counted {
			n.pending.Done()
		}
	}()
	defer func() {
		if queue == nil {
			n.putOp(o)
		} else {
			*queue = append(*queue, n.recycle(o)...)
		}
	}()
	defer func() {
		if o.exited != nil {
			<-o.exited // drain sees s closed and returns; it needs no lock we hold
		}
	}()
	_ = n.run(context.Background(), o, &heldCloseSteps) // cannot fail
}

// heldCloseSteps: closeSteps for a close that holds its locks already
// (attemptClose).
var heldCloseSteps = steps{acquire: func(context.Context, *Notifier, *op) error { return nil }, commit: commitClose}

// closeIdle closes s with err, unless it is closed already, if s wants no
// key: then the close ends no want and needs no shard lock, only s.mu (it
// runs shut, as commitClose does), for a want is added only under s.mu
// and a want's end by delivery is never undone. It reports false, having
// done nothing, if s wants a key; the caller takes the general path. Like
// close, it returns once s is closed and its drain goroutine has returned.
//
// With first set (close), it also records that a close of s has begun, and
// sets *first to whether it is the first end of s to begin: s is not
// closed, no close began before, no slow-consumer end is pending
// (overflow) and Close has not begun. Only such a close may report the keys
// it ends (ReleaseAll).
func (s *Subscription) closeIdle(err error, first *bool) bool {
	s.mu.Lock()
	if first != nil {
		*first = !s.ending && !s.overflow && !s.closed.Load() && !s.n.closed.Load()
		s.ending = true
	}
	for _, e := range s.keys {
		if !e.ended.Load() {
			s.mu.Unlock()
			return false
		}
	}
	exited := s.shut(err, func(cid.Cid) { panic("notifier: closeIdle: a live want") }) // checked above, under s.mu
	s.mu.Unlock()
	if exited != nil {
		<-exited
	}
	if s.n.m != nil {
		s.n.m.refresh(s.n) // observe.go's gauges, as handedOver refreshes them
	}
	return true
}

// closeSteps: a close takes the shards of every key s wants, and s.mu, and
// ends them all in its commit.
var closeSteps = steps{acquire: acquireAll, commit: commitClose}

func acquireAll(_ context.Context, _ *Notifier, o *op) error {
	o.sub.lockAll(o)
	return nil
}

// commitClose marks s closed, ends its wants and lets it go from the
// registry. The caller holds s.mu (lockAll), which commitClose releases. If
// a drain goroutine still runs, o.exited is set to what close waits for
// once it has released its locks: drain sees s closed (markClosed closed
// out) and returns, and no close returns while a goroutine of s runs.
func commitClose(n *Notifier, o *op) error {
	s := o.sub
	o.exited = s.shut(o.why, func(k cid.Cid) { s.endWant(o, k, n.shardOf(k)) })
	s.mu.Unlock()
	return nil
}

// shut is what every close of s does under s.mu: it marks s closed with err
// (unless it is closed already), calls end for each key s still wants (the
// caller holds their shard locks), forgets s's keys and lets s go from the
// registry. It returns the exited channel of s's drain goroutine, if one
// still runs, for the close to wait for once it has released its locks, or
// nil.
func (s *Subscription) shut(err error, end func(k cid.Cid)) (exited chan struct{}) {
	s.markClosed(err)
	if s.draining {
		exited = s.exited
	}
	for k, e := range s.keys {
		if !e.ended.Load() {
			end(k)
		}
	}
	s.keys, s.stale, s.keysPeak = nil, 0, shrink.Peak{} // nil: a closed subscription keeps no storage of its wants
	if !s.anon || s.listed {
		s.n.unregister(s) // NOTE: n.mu under s.mu (and shard locks, in commitClose); n.mu is a leaf
	}
	return exited
}

// lockAll takes the shard locks of every key s wants, then s.mu, at a moment
// when no other operation holds a reservation on one of those keys, nor
// waits with one of them marked having started before it. A Subscribe may
// add a key in another shard between computing the set and
// locking it; then it starts over with the larger set. That converges: keys
// are added only under their shard's lock, which lockAll holds once the set
// covers them. A busy key (reserved, or marked by an older waiter) makes it
// mark the busy keys it holds (markIfBusy), release everything, wait for
// the first one's holder, and start over, keeping its marks until it goes
// on (see Notifier.lockFree and Notifier.mark). Stale entries need no lock: an ended
// interest never comes back. Asleep, it also wakes when a want of s ends
// (op.letGo): the key it slept for may
// be one that s no longer wants.
func (s *Subscription) lockAll(o *op) { s.lockAllOrPark(o, false) }

// lockAllOrPark is lockAll, or, with park, the attempt of a pending close
// (closeSlow), which never sleeps: where lockAll would sleep, it marks the
// busy keys as lockAll does, parks o on the claimant of the first one
// (Notifier.parkOn), releases every lock and reports false. That claimant,
// the operation that ends a want of s whose key o marked, or the one that
// makes a mark of that claimant stop holding (op.letGo), calls it again when
// done. It reports true holding what lockAll returns holding.
func (s *Subscription) lockAllOrPark(o *op, park bool) bool {
	n := s.n
	for {
		s.mu.Lock()
		covered := true
		var first *op // the claimant of the first busy key
		from := len(o.resKeys)
		for k, e := range s.keys {
			if e.ended.Load() {
				continue
			}
			sh := n.shardOf(k)
			if !o.locks.Has(int(sh)) {
				o.more.Add(int(sh))
				covered = false
			} else if o.locked {
				first = s.markIfBusy(o, k, sh, first)
			}
		}
		if covered && o.locked && first == nil {
			n.unmark(o)
			return true
		}
		var busy, nudge chan struct{}
		if first != nil {
			n.mark(o, from)
			if park {
				// Once parked, o is first's to resume, which may happen as
				// soon as the shard locks are released: o must be left as
				// the next attempt expects it before parkOn, and not
				// touched after it.
				held := slices.Clone(o.locks) // o.more is not in it yet
				o.locked = false
				o.mergeMore()
				n.parkOn(o, first) // under the shard locks, while first holds its key up
				s.mu.Unlock()
				n.unlock(held)
				return false
			}
			busy = first.wakeOnRelease()
			nudge = make(chan struct{})
			o.nudge.Store(&nudge)
		}
		s.mu.Unlock()
		if o.locked {
			n.unlock(o.locks) // only what was locked: o.more is not in it yet
			o.locked = false
		}
		o.mergeMore()
		if busy != nil {
			n.awaitClose(busy, nudge)
			o.nudge.Store(nil)
		}
		n.lock(o.locks)
		o.locked = true
	}
}

// mergeMore adds to o.locks the shards that lockAllOrPark found it lacks.
func (o *op) mergeMore() {
	for i := o.more.Next(0); i >= 0; i = o.more.Next(i + 1) {
		o.locks.Add(i)
	}
	o.more.Clear()
}

// parkOn parks o, a pending close, on c, the claimant of the first key it
// found busy: c resumes it when done (putOp). The caller holds the shard
// lock of that key, under which c's claim holds (so c has not reached putOp
// yet), and s.mu, s being o's open subscription: the first park counts o in
// Notifier.pending before any Close can wait for it.
func (n *Notifier) parkOn(o, c *op) {
	if !o.pending {
		o.pending = true
		n.pending.Add(1)
	}
	gen := n.parkSeq.Add(1)
	o.park.Store(gen)
	c.enqueue(o, gen)
}

// resume runs again the pending closes parked, holding no lock: each either
// completes or parks on its next claimant. A stale entry (the close was
// resumed by someone else meanwhile) is skipped. If a cancel function
// panics in one, the others are resumed before the panic goes on.
//
// The closes that a resumed close held up in turn join the same queue
// (attemptClose), behind the rest. The tempting way, each completed close
// resuming its own from its putOp, nests a call of attemptClose, putOp and
// resume per close on the stack: closes can park one behind another (a
// close finds a key marked by an older parked close, claimant), and the
// resumption of a chain of M of them took M nested frames (found by review;
// TestResume_ChainOfPendingClosesDoesNotNest).
func (n *Notifier) resume(parked []parkEntry) {
	queue := parked
	carryon.Drain(&queue, func(e parkEntry) {
		if e.o.park.CompareAndSwap(e.gen, 0) {
			n.attemptClose(e.o, &queue)
		}
	})
}

// markIfBusy notes k, in shard sh, for lockAll's close o to mark if another
// operation holds it (claimant): one that reserved it, or an older waiter
// whose mark holds. It returns first, or, if first is nil and k is held,
// k's claimant, which o will sleep on or park on. The caller holds
// sh's lock and s.mu.
//
// A close marks only the keys it finds busy, as markBusy does for the other
// operations, and keeps them until it goes on. Marking every key that s
// wants, as a close first did, held up every operation on any of them (a
// Publish of a block that s wants, a Subscribe of one, by any subscription)
// for the close's whole wait, perhaps a stalled blockstore call on another
// key (G11; TestIO_WaitingCloseHoldsUpOnlyTheKeysItFoundBusy).
func (s *Subscription) markIfBusy(o *op, k cid.Cid, sh int32, first *op) *op {
	n := s.n
	c := n.claimant(o, k, sh)
	if c == nil {
		return first
	}
	if first == nil {
		first = c
	}
	if !n.shards[sh].idx.marked(k, o) {
		o.resKeys = append(o.resKeys, k)
		o.keyShards = append(o.keyShards, sh)
	}
	return first
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

// lockShared locks, for a Subscribe whose check found blocks that other
// subscriptions want too (hits with a block and an interest), the
// subscriptions that route will hand those blocks to: the subscriber and the
// others, the very targets of route. It reports whether there were any; then
// route's lockTargets finds them locked. Taking them before want records the
// wants, rather than in route, is what keeps a reader under the subscriber's
// lock alone (AppendWanted, closeIdle, commitHit) from seeing the
// Subscribe's wants recorded while the blocks it found are not queued: an
// operation that such a reader's caller starts next would reach s first
// (G6). The caller holds the hits' shard locks.
func (o *op) lockShared() bool {
	var seen map[*Subscription]struct{}
	for i := range o.hits {
		h := &o.hits[i]
		if h.blk == nil || h.e == nil {
			continue
		}
		for _, t := range h.e.subs {
			if seen == nil {
				seen = make(map[*Subscription]struct{})
			}
			if _, dup := seen[t]; dup {
				continue
			}
			seen[t] = struct{}{}
			o.order = append(o.order, lockEntry{seq: t.seq, s: t, t: -1})
		}
	}
	if len(o.order) == 0 {
		return false
	}
	if _, dup := seen[o.sub]; !dup { // always so: candidates skipped the keys s wants; but a lock taken twice would hang
		o.order = append(o.order, lockEntry{seq: o.sub.seq, s: o.sub, t: -1})
	}
	o.lockOrder()
	o.prelocked = true
	return true
}

// unlockShared releases what lockShared took, when want fails.
func (o *op) unlockShared() {
	for _, l := range o.order {
		l.s.mu.Unlock()
	}
	cut(&o.order) // zeroed: putOp clears only the entries in use, and a pooled op must keep no subscription alive
	o.prelocked = false
}

// lockTargets locks the target subscriptions, unless lockShared has. Those
// that take their messages through a function get them from handFuncs,
// under the shard locks; the channel subscriptions get theirs from handOut,
// once handOver has released the shard locks that the cancel function does
// not need. Holding every target's lock from before the first message to
// after the last is what makes two operations that reach the same
// subscriptions reach them all in the same order, whatever their shards.
//
// Several targets are locked in any order, without waiting (tryLockTargets),
// which almost always succeeds: a subscription's lock is held only briefly,
// by an operation delivering to it, its drain goroutine or a read. If one is
// held, lockTargets releases what it took and locks them all in ascending seq,
// the lock order. Sorting every time cost more than the rest of the locking.
func (o *op) lockTargets() {
	if o.prelocked { // by lockShared, the same set: list them with their targets
		o.order = o.order[:0]
	}
	first := len(o.order) // 0: route locks once per operation
	o.order = slices.Grow(o.order, len(o.targets))[:first+len(o.targets)]
	for i := range o.targets {
		l, s := &o.order[first+i], o.targets[i].s // in place, as buildOne writes targets
		l.seq, l.s, l.t = s.seq, s, i
	}
	if !o.prelocked {
		o.lockOrder()
	}
}

// lockOrder locks the subscriptions of o.order, trying first without
// waiting and else in ascending seq, the lock order.
func (o *op) lockOrder() {
	if len(o.order) == 1 {
		o.order[0].s.mu.Lock()
	} else if !o.tryLockTargets() {
		slices.SortFunc(o.order, func(a, b lockEntry) int { return cmp.Compare(a.seq, b.seq) })
		for _, l := range o.order {
			l.s.mu.Lock() // NOTE: several Subscription locks, in ascending seq
		}
	}
}

// handFuncs hands their messages to the targets that take them through a
// function (see NewSubscriptionFunc), which run under the shard locks as
// documented. The caller holds the targets' locks (lockTargets).
func (o *op) handFuncs() {
	for o.next < len(o.order) {
		l := o.order[o.next]
		o.next++ // before the function: if it panics, finish carries on after it
		if l.s.fn != nil {
			o.accept(&o.targets[l.t])
		}
	}
}

// tryLockTargets locks the targets in o.order without waiting. If one is
// held, it unlocks those it locked and returns false.
func (o *op) tryLockTargets() bool {
	for i, l := range o.order {
		if !l.s.mu.TryLock() {
			for _, t := range o.order[:i] {
				t.s.mu.Unlock()
			}
			return false
		}
	}
	return true
}

// handOut hands the channel subscriptions locked by lockTargets their
// messages and unlocks every target. The caller holds its shard locks, so
// that no operation on its keys sees it done before the messages are queued
// (see Notifier.handOver).
func (o *op) handOut() {
	for _, l := range o.order {
		if l.s.fn == nil {
			o.accept(&o.targets[l.t])
		}
	}
	for _, l := range o.order {
		l.s.mu.Unlock()
	}
}
