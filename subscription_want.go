package notifier

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/shrink"
)

// This file holds the operations that begin and end a subscription's wants,
// Subscribe, Unsubscribe and Release, and the reads of its wants. See
// subscription.go for the type.

// Subscribe makes the subscription want keys and, in the same atomic step,
// looks each newly wanted key up in the blockstore: a block already there is
// delivered at once, to this subscription and to every other one waiting for
// it, as if it had been published locally. Once Subscribe has returned nil,
// the block of each key reaches the subscription unless it stops wanting the
// key first: a block stored before (with a blockstore) or published after.
// (With WithFailedCheckAsMiss, a key whose Get failed is the exception: it
// waits for a block published after, as a key not stored does.)
// A notify-only Notifier (New(nil)) stores nothing and checks nothing, so
// a block published just before Subscribe took effect does not reach it.
//
// Keys already wanted are ignored; duplicates are fine. An undefined key
// fails the call with ErrInvalidCid before anything changes. The blockstore
// is checked holding no lock of the Notifier, with the keys the subscription
// does not want yet reserved, and the wants are recorded after it: so if the
// blockstore fails, the call has added no want (and, those keys being
// reserved, no other operation has satisfied one meanwhile), nothing
// changes, and the error is returned wrapped. With WithFailedCheckAsMiss,
// a failure of the store (not the ending of ctx) is a miss instead: the key
// is wanted as if no block were stored, the call returns nil, and the error
// goes to that option's function. If a want of the subscription
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
// yet, or older ones that wait for one of those keys, until the blockstore
// call they wait for, on that key, returns (see doc.go; ctx ends that wait,
// and so does the end of the subscription). A key the subscription wants
// already holds the call up for no blockstore call (G11).
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
	handled, err := false, error(nil)
	if len(keys) == 1 {
		handled, err = s.subscribeOne(ctx, keys[0], &p)
	}
	if !handled {
		err = s.subscribeAll(ctx, keys, &p)
	}
	if err == nil {
		n.passTaken(&p, nil)
	}
	return err
}

// subscribeAll is Subscribe on the general path, with the keys reserved; p
// carries the time of a Get that subscribeOne or Fetch made before it.
//
// An attempt that starts over keeps the first one's op id: it is as old as
// the call, so operations that started after the call still wait behind it,
// and it behind none of them. With a new id, the next attempt waited behind
// a Publish that had started during the first one, for that Publish's wait
// for a stalled PutMany (review, TestIO_SubscribeKeepsItsPlaceWhenItStartsOver).
func (s *Subscription) subscribeAll(ctx context.Context, keys []cid.Cid, p *probe) error {
	var id uint64
	for {
		again, err := s.subscribeOnce(ctx, keys, p, &id)
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
// Otherwise p.taken is the attempt's (WithFailedCheckAsMiss). id is the op
// id of the first attempt, 0 before it.
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
	// A failure that an earlier attempt took for a miss is not this one's:
	// its Get is to be made again, or not at all if the keys are wanted by
	// now (review). So, as for a fallback (missed), nobody hears of it.
	o.probe.forgetFailure()
	defer func() {
		if again {
			*p = o.probe
		} else {
			p.taken = o.probe.taken
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
	k, err := o.sub.get(ctx, o)
	failure := err
	if o.probe.taken != nil { // the store's failure, even if ctx ended a later Get (review)
		failure = errors.Unwrap(o.probe.taken)
	}
	o.probe.storeDone(ctx, t, 0, failure) // observe.go hook: the store's own error, as on every path
	if err != nil {
		return checkError(k, err)
	}
	return nil
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
// k and no operation reserves it (a waiter's mark does not count; see
// shardIndex.alone): then a found block is for s
// alone and a missing one adds one want, and the call can skip the op, the
// reservation and the hand-over. It checks the blockstore holding no lock
// and commits only if no operation has touched k meanwhile (see peek, in
// shard_read.go, for why that is the same atomic step). It reports handled false,
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
// shard_read.go, which also says when the caller must hold it all the same). If
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

// inInterest is listedIn for one key: it releases s.mu if listedIn took it.
// The caller holds k's shard lock.
func (s *Subscription) inInterest(e *interest, k cid.Cid) bool {
	locked := false
	in := s.listedIn(e, k, &locked)
	if locked {
		s.mu.Unlock()
	}
	return in
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
		s.handOwn(o)
	}
	return nil
}

// handOwn hands s the blocks of o.hits, which the check found and nobody
// else waits for (the common case, a request for stored blocks), under the
// s.mu that the caller holds, and empties o.hits.
func (s *Subscription) handOwn(o *op) {
	blks := make([]blocks.Block, len(o.hits))
	for i := range o.hits {
		blks[i] = o.hits[i].blk
	}
	clear(o.hits)
	o.hits = o.hits[:0]
	o.probe.handedOwn(len(blks)) // observe.go hook
	if s.accept(&ResponseMessage{Blocks: blks}, 0) {
		o.slow = append(o.slow, s)
	}
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

// Wants reports whether the subscription wants k now. It takes k's shard
// lock, so it waits for operations on that shard; it is safe for concurrent
// use and returns false once the subscription has ended.
func (s *Subscription) Wants(k cid.Cid) (in bool) {
	if !k.Defined() {
		return false
	}
	s.n.read(k, func(idx *shardIndex) {
		if e := idx.lookupFor(k, s); e != nil {
			in = s.inInterest(e, k)
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

// addSleeper enters o, a Subscribe of s about to sleep in lockFree with a
// nudge, in s.asleep, so that markClosed wakes it: once s is closed, o has
// nothing left to do, and must not sleep on until what it waits for, maybe
// a stalled blockstore call, is over; its marks, on keys s does not want,
// hold up others meanwhile (G11). A close ends only the wants of s, so
// nothing else wakes it (review, TestIO_WaitingSubscribeWakesWhenItsSubscriptionEnds).
// If s is closed already, it returns the error Subscribe returns. The
// caller holds o's shard locks.
func (s *Subscription) addSleeper(o *op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended() { // closes a request that Close has begun for without knowing of it
		return s.closedErr()
	}
	s.asleep = append(s.asleep, o)
	return nil
}

// dropSleeper takes o out of s.asleep once it wakes.
func (s *Subscription) dropSleeper(o *op) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.asleep, o); i >= 0 {
		s.asleep = slices.Delete(s.asleep, i, i+1)
	}
}
