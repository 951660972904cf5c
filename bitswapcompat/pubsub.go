package bitswapcompat

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/shrink"
	"github.com/bitswapsync/notifier/internal/waitmu"
)

// PubSub hands received blocks to the requests that wait for them, with the
// method set of boxo's notifications.PubSub. Each Subscribe call that waits
// is a request subscription of the Notifier (Notifier.NewRequest; a one-key
// call whose block is stored makes none, see Notifier.Fetch), which has no
// session ID, so the blockstore check and the subscription are one atomic
// step, a waiting call costs no goroutine, and calls never collide with
// sessions. All methods are safe for concurrent use.
//
// In tests, a PubSub belongs to one testing/synctest bubble, or to none: the
// Go runtime ends the process when a goroutine outside a bubble waits on a
// channel made inside it, and Publish's pacing (pace) keeps such a channel,
// made by the last Publish that handed a block. So a Publish outside a
// bubble, after a Publish inside one handed a block, is a fatal error. boxo's
// layer tolerates that sequence, though not every sharing: its Subscribe
// inside a bubble makes a channel that its goroutine outside then sends on.
// No primitive of package sync avoids it either: sync.Cond is fatal the other
// way round, and Go 1.26's WaitGroup.Wait crashes outside a bubble on a
// WaitGroup of the bubble whose count is zero. Found by review.
type PubSub struct {
	n     *notifier.Notifier  // owned: Shutdown closes it
	bs    notifier.Blockstore // the Notifier's, read again by recheck; nil for none
	wrap  BlockWrapper
	onErr func(error)

	// missed counts the blockstore checks that the Notifier took for a miss
	// (checkFailed): a call during whose Subscribe it moved is checked
	// again later (recheck).
	missed atomic.Uint64

	nfinish  atomic.Int64 // the length of finished, so that reap takes no lock when there is nothing to do
	log      failLog      // the calls whose Subscribe has begun, and the failed stores they may have missed; its keys under mu
	shutdown sync.Once

	// Pacing of Publish (see pace): woke is set by a delivery that sent a
	// block; paced is closed by the goroutine that the Publish which found
	// woke set started, once that goroutine has run; handed is when that
	// Publish started it, as time since epoch.
	woke   atomic.Bool
	paced  atomic.Pointer[chan struct{}]
	handed atomic.Int64
	epoch  time.Time
	pacer  func() // tests only: run by pace's goroutine before it closes paced
	// tracking, tests only, runs at the start of track: between a call's
	// Subscribe of the Notifier and its listing.
	tracking func()

	// mu guards the fields below. Delivery functions take it (after call.mu),
	// so it is never held while calling the Notifier.
	mu        waitmu.Mutex
	calls     map[*call]struct{} // live calls, whose channels Shutdown closes
	callsPeak shrink.Peak        // of calls, which gives back the storage of a burst of calls (shrink.Fit)
	ending    int                // calls that beginEnd has taken out of calls and whose channels finishEnd has not closed yet, and re-checks under way (recheck)
	ended     sync.Cond          // on mu: broadcast, once closed, when ending drops to 0
	finished  *call              // calls completed inside a delivery, linked by call.next, for reap to remove
	closed    bool
}

func newPubSub(bs notifier.Blockstore, cfg config) *PubSub {
	nopts := cfg.nopts
	if cfg.cancel != nil {
		nopts = append(slices.Clip(nopts), notifier.WithCancelFunc(cfg.cancel))
	}
	ps := &PubSub{
		bs:    bs,
		wrap:  cfg.wrap,
		onErr: cfg.onErr,
		calls: make(map[*call]struct{}),
		epoch: time.Now(),
	}
	if bs != nil {
		// boxo's GetBlocks takes a failed Get for a miss and asks the
		// network; so does Subscribe here (MIGRATION.md), and it checks
		// the call's keys again later (recheck).
		nopts = append(slices.Clip(nopts), notifier.WithFailedCheckAsMiss(ps.checkFailed))
	}
	ps.n = notifier.New(bs, nopts...)
	ps.ended.L = &ps.mu
	return ps
}

// call is one Subscribe: a subscription of the Notifier that sends each
// key's block into ch and closes ch once.
type call struct {
	ps    *PubSub
	ch    chan blocks.Block // one slot per key; closed by deliver, or by the finishEnd of the beginEnd that set ended
	keys  []cid.Cid         // distinct defined keys
	one   [1]cid.Cid        // keys' array for a call of one key, the GetBlock of a client
	undef bool              // an undefined key was asked for: its block never comes, so only ctx or Shutdown ends c
	start time.Time         // for the BlockWrapper
	sub   *notifier.Subscription

	// mu guards the fields below. The call's delivery function holds it while
	// it runs, under the Notifier's locks.
	mu          waitmu.Mutex
	ended       bool        // the call has ended: ch is closed or being closed
	subscribing bool        // its Subscribe has not returned: a delivery that completes c leaves the rest to it (see track)
	left        pending     // keys whose block has not arrived
	stop        func() bool // stops the context.AfterFunc that ends the call
	retry       *time.Timer // the next re-check of its keys (recheckLater), stopped when c ends

	next  *call  // the next call in PubSub.finished; guarded by PubSub.mu
	seq   uint64 // its place among the calls whose Subscribe began (failLog.begun); set before c is shared
	epoch uint64 // the epoch in which its Subscribe began (failLog.begin)
}

// pendingScan is the largest call whose keys pending scans rather than
// hashes: at a few nanoseconds per comparison a scan of that many keys costs
// less than making and filling a map, which for a call of one key was about
// an eighth of the call's CPU (BENCHMARKS.md, sixth series).
const pendingScan = 16

// pending.bits has a bit for each key of a scanned call: this fails to
// compile if pendingScan outgrows it.
const _ uint32 = 1 << (pendingScan - 1)

// pending is the set of a call's keys whose block has not arrived. For a
// call of at most pendingScan keys it is a bit per entry of call.keys, found
// by scanning them; for a larger one, a map.
type pending struct {
	n    int                  // keys not arrived
	bits uint32               // small calls: bit i is set while keys[i] has not arrived
	set  map[cid.Cid]struct{} // large calls
}

// distinct sets c.keys to the distinct defined keys of keys, in order, and
// c.left to all of them, and records in c.undef whether keys had an
// undefined one.
func (c *call) distinct(keys []cid.Cid) {
	c.keys = c.one[:0]
	if len(keys) > 1 {
		c.keys = make([]cid.Cid, 0, len(keys))
	}
	large := len(keys) > pendingScan
	if large {
		c.left.set = make(map[cid.Cid]struct{}, len(keys))
	}
	for _, k := range keys {
		switch {
		case !k.Defined():
			c.undef = true
			continue
		case large:
			if _, dup := c.left.set[k]; dup {
				continue
			}
			c.left.set[k] = struct{}{}
		case slices.Contains(c.keys, k):
			continue
		default:
			c.left.bits |= 1 << len(c.keys)
		}
		c.keys = append(c.keys, k)
	}
	c.left.n = len(c.keys)
}

// awaited reports whether k is a key of c whose block has not arrived, and
// if so where: the bit of k for a scanned call (0 for a large one), for
// arrive. The caller holds c.mu.
func (c *call) awaited(k cid.Cid) (bit uint32, ok bool) {
	if c.left.set != nil {
		_, ok = c.left.set[k]
		return 0, ok
	}
	for i, key := range c.keys {
		if key == k {
			bit = uint32(1) << i
			return bit, c.left.bits&bit != 0
		}
	}
	return 0, false
}

// arrive records that the block of k, which awaited found at bit, has
// arrived. The caller holds c.mu.
func (c *call) arrive(k cid.Cid, bit uint32) {
	if c.left.set != nil {
		delete(c.left.set, k)
	} else {
		c.left.bits &^= bit
	}
	c.left.n--
}

// Subscribe returns a channel that yields the block of each of keys once, in
// arrival order, and is then closed. It is closed early when ctx is done or at
// Shutdown, and is already closed on return if keys is empty or the PubSub was
// shut down. An early close comes once the call has left the Notifier, so a
// reader that sees the channel closed finds nothing of the call left: if a
// blockstore call holds one of keys at that moment (a Publish storing its
// block, another call's check of it), the close comes after
// that call returns (boxo closes at once). An undefined CID among keys, as
// in boxo, never arrives: the channel then yields the other keys' blocks and
// is closed only when ctx is done or at Shutdown. The channel's capacity is
// len(keys), so delivery never waits for the reader.
//
// The subscription is live when Subscribe returns: every block of keys
// published later reaches the channel, and so does a block that is already in
// the blockstore (checked inside the subscription, so a block stored just
// before the call is not missed). A check that fails is taken for a miss, as
// boxo's block service takes it: the call waits for that block too, and the
// error goes to WithErrorFunc. Unlike boxo, a call during whose Subscribe a
// check failed (its own, or another call's at the same time) and that still
// waits has its keys checked again, 100 ms later and then at doubling delays
// up to 10 s, on a goroutine of the timer's, until a check of each key has
// found its block or found it missing, or the call ends: a block found is
// published as a local add is (the Notifier's Publish with the zero peer
// ID), and a failure again goes to WithErrorFunc. So a block that was stored
// before the call, and that no Publish will bring again, still comes (see
// recheck.go). Subscribe is safe for concurrent use; it blocks only for the
// blockstore and for operations on the same keys. The PubSub closes the
// channel; the caller must not.
func (ps *PubSub) Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block {
	// A block found in the blockstore may complete other calls too. Deferred:
	// also when a function of the user panics, as Publish reaps. Also without
	// keys: every call removes the calls that a native operation completed.
	defer ps.reap()
	ch := make(chan blocks.Block, len(keys))
	if len(keys) == 0 {
		close(ch)
		return ch
	}
	var start time.Time
	if ps.wrap != nil {
		start = time.Now()
	}
	if k, ok := oneKey(keys); ok {
		return ps.fetch(ctx, ch, k, start)
	}
	c := &call{ps: ps, ch: ch, start: start, subscribing: true}
	c.distinct(keys)
	c.seq, c.epoch = ps.log.begin()
	missed := ps.missed.Load()
	returned := false
	defer func() {
		if !returned { // a delivery function (the BlockWrapper) panicked: nothing will track c
			ps.log.settle(c.epoch)
			c.end()
			if c.sub != nil {
				c.sub.Remove() // end does not if a delivery ended c first
			}
		}
	}()
	sub, err := ps.n.NewRequest(c.deliver)
	if err == nil {
		c.sub = sub
		err = sub.Subscribe(ctx, c.keys...)
	}
	returned = true
	return ps.started(ctx, c, err, missed)
}

// oneKey reports whether keys name one defined key, k, however many times.
func oneKey(keys []cid.Cid) (k cid.Cid, ok bool) {
	k = keys[0]
	for _, other := range keys[1:] {
		if other != k {
			return cid.Undef, false
		}
	}
	return k, k.Defined()
}

// fetch is Subscribe of the one key k, the GetBlock of a client
// (Notifier.Fetch): a block in the blockstore is sent into ch, which is then
// closed, and nothing else is made, not even the call; otherwise the call
// and its request are made, holding no lock, and wait as any other.
//
// The call is counted under way (failLog.begin) before the Fetch, as
// Subscribe counts its calls before their check: a Publish that fails to
// store k while Fetch's Get of k misses must find the call under way. (It
// was counted when Fetch made the request, after the Get: such a call was
// spared and waited until its ctx ended. Found by review, with
// TestPubSub_FailedStoreEndsAOneKeyCallWhoseCheckBeganBefore.)
func (ps *PubSub) fetch(ctx context.Context, ch chan blocks.Block, k cid.Cid, start time.Time) <-chan blocks.Block {
	var c *call
	seq, epoch := ps.log.begin()
	missed := ps.missed.Load()
	returned := false
	defer func() {
		if !returned { // a delivery function (the BlockWrapper) panicked: nothing will track c
			ps.log.settle(epoch)
		}
	}()
	blk, sub, err := ps.n.Fetch(ctx, k, func() func(notifier.ResponseMessage) {
		c = &call{ps: ps, ch: ch, start: start, subscribing: true, seq: seq, epoch: epoch}
		c.distinct([]cid.Cid{k})
		return c.deliver
	})
	returned = true
	if err == nil && sub == nil { // found in the blockstore: Fetch made nothing
		ps.log.settle(epoch)
		ch <- ps.wrapBlock(blk, "", start) // as deliver hands a block that Subscribe found
		ps.woke.Store(true)
		close(ch)
		return ch
	}
	if c == nil { // an error before any request was made
		ps.log.settle(epoch)
		report(ctx, ps.onErr, err)
		close(ch)
		return ch
	}
	c.sub = sub
	return ps.started(ctx, c, err, missed)
}

// started ends the Subscribe of c, whose request subscription is c.sub, if
// made, err being the error of making it or of its Subscribe. missed is
// ps.missed before the Notifier's check: if it has moved, the check of c's
// keys, or of another call's, failed meanwhile, and a c that still waits is
// checked again later (recheckLater).
func (ps *PubSub) started(ctx context.Context, c *call, err error, missed uint64) <-chan blocks.Block {
	if err != nil {
		ps.log.settle(c.epoch)
		// Deferred: the error function, which runs first, may panic, and
		// c's request would then stay in the Notifier until Shutdown.
		defer c.end()
		report(ctx, ps.onErr, err)
		return c.ch
	}
	if ps.track(c) {
		c.watch(ctx)
		if ps.missed.Load() != missed {
			c.recheckLater(ctx, recheckFirst)
		}
	}
	return c.ch // Subscribe reaps
}

// track ends c's Subscribe. A call that its Subscribe completed, as the
// GetBlock of a block in the blockstore is, has only its subscription to
// remove; track removes it and reports false. A call still waiting becomes a
// live call, which Shutdown ends, and track reports true; if the PubSub was
// shut down meanwhile, track ends c and reports false. So a call enters
// PubSub.calls only once it outlives its Subscribe, and one that does not
// takes no PubSub.mu at all.
//
// Shutdown sets closed before it collects calls, and track checks closed
// under the same lock, so a call that track lists is ended by Shutdown, and
// one that it does not, by track. A delivery that completes c, from its own
// Subscribe or from a Publish running meanwhile, finds subscribing set and
// leaves the removal to track; so c never enters calls, nor finished, once
// completed. Listing c before its Subscribe and letting Shutdown end it there
// is what this replaces: three PubSub.mu sections and a map entry per call.
func (ps *PubSub) track(c *call) bool {
	if h := ps.tracking; h != nil {
		h()
	}
	c.mu.Lock()
	c.subscribing = false
	if c.ended {
		c.mu.Unlock()
		ps.log.settle(c.epoch)
		c.sub.Remove()
		return false
	}
	ps.mu.Lock() // c.mu, then ps.mu, as in deliver
	closed := ps.closed
	missed := false
	if !closed {
		ps.calls[c] = struct{}{}
		ps.callsPeak.Grew(len(ps.calls))
		missed = c.missedFailure()
	}
	ps.log.settle(c.epoch)
	if !ps.log.empty() {
		ps.log.prune()
	}
	ps.mu.Unlock()
	c.mu.Unlock()
	if closed || missed {
		// A store that failed while c's Subscribe was under way, by a
		// Publish that began after it, is one that c's subscription may
		// have been waiting for: c ends as failWaiting ends the calls it
		// finds (failWaiting).
		c.end()
	}
	return !closed && !missed
}

// missedFailure reports whether a failed store logged in ps.log, by a
// Publish that began after c's Subscribe began, was of a key c awaits. The
// caller holds c.mu and ps.mu.
func (c *call) missedFailure() bool {
	if c.ps.log.empty() {
		return false
	}
	for _, k := range c.keys {
		if _, waits := c.awaited(k); waits && c.seq <= c.ps.log.failed(k) {
			return true
		}
	}
	return false
}

// watch arranges for c to end when ctx is done. With a context of the
// standard library, AfterFunc starts no goroutine until then. A context that
// is never done (Background), or a call that has already ended, as one whose
// blocks were all in the blockstore has, needs nothing: AfterFunc and its stop
// were a seventh of such a call's cost.
func (c *call) watch(ctx context.Context) {
	if ctx.Done() == nil {
		return
	}
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return
	}
	stop := context.AfterFunc(ctx, c.end)
	c.mu.Lock()
	ended = c.ended
	if !ended {
		c.stop = stop
	}
	c.mu.Unlock()
	if ended {
		stop()
	}
}

// deliver is c's delivery function: the Notifier runs it, under its locks,
// with each message that c wants. It must not call the Notifier: a call that
// it completes is queued for reap.
func (c *call) deliver(m notifier.ResponseMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	sent := false
	for _, b := range m.Blocks {
		k := b.Cid()
		bit, ok := c.awaited(k)
		if !ok {
			continue
		}
		// The wrapper first: if it panics, k has not arrived, so the call
		// is not completed without its block by the delivery of the others
		// (WithBlockWrapper: it stays open until ctx ends or Shutdown).
		wb := c.ps.wrapBlock(b, m.From, c.start)
		c.arrive(k, bit)
		c.ch <- wb // never blocks: a slot per key, each key once
		sent = true
	}
	if sent {
		c.ps.woke.Store(true)
	}
	if c.left.n > 0 || c.undef {
		return
	}
	c.ended = true
	close(c.ch)
	if c.stop != nil {
		c.stop() // does not wait: it only unregisters from ctx
	}
	c.stopRetry()
	if c.subscribing {
		return // track removes c's subscription
	}
	c.ps.finish(c)
}

func (ps *PubSub) wrapBlock(b blocks.Block, from string, start time.Time) blocks.Block {
	if ps.wrap == nil {
		return b
	}
	return ps.wrap(b, peer.ID(from), time.Since(start))
}
