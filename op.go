package notifier

import (
	"slices"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/shardset"
)

// This file holds the state of one operation and the routing of what it
// delivers. It takes no lock: the functions here run under the locks that
// the skeleton (run.go) holds, as each says.

// hit is one wanted key of an operation: a key of a published message that
// some subscription wants, or a block that Subscribe found in the blockstore.
type hit struct {
	key   cid.Cid
	e     *interest // the key's interest; in Subscribe nil until want, and after it nil for a hit only its subscriber wants (op.self)
	shard int32
	kind  kind
	blk   blocks.Block // kind == kindBlock
}

// waitScope is which of an operation's keys it waits for, and marks while
// it waits (Notifier.needs).
type waitScope uint8

const (
	waitAll      waitScope = iota // every key: Publish, and a close, whose keys are those its subscription wants
	waitWanted                    // the keys its subscription wants: Unsubscribe and Release, which change nothing for the others
	waitUnwanted                  // the keys its subscription does not want: Subscribe, which changes nothing for the others (see commitSubscribe)
)

// target is the message that one subscription gets from an operation.
type target struct {
	s          *Subscription
	nb, nh, nd int // counts of Blocks, Haves and DontHaves
	stale      int // blocks that end a want recorded in s.keys
	msg        ResponseMessage
}

// lockEntry is a target subscription in the order lockTargets locks them.
// Sorting these rather than the targets, when lockTargets must sort, moves
// 24 bytes per swap instead of ~120.
type lockEntry struct {
	seq uint64
	s   *Subscription
	t   int // index in op.targets
}

// op is the state of one run of the skeleton (run.go): its input, what its
// plan decided, and what it hands over. It is pooled: after warm-up an
// operation allocates only the messages it hands out and the keys it passes
// to the cancel function.
type op struct {
	id uint64 // unique among ops of one Notifier

	// Input.
	msg     ResponseMessage // Publish
	sub     *Subscription   // Subscribe, Unsubscribe, Release, close
	why     error           // close: what Err will return
	closing bool            // a close: its marks are the keys o.sub wants (see op.holds)
	from    string          // the From of the messages handed out

	// Locks and reservations.
	locks     shardset.Set                  // shards to lock
	locked    bool                          // locks are held (see Subscription.lockAll)
	keep      shardset.Set                  // subset of locks held until the cancel function returns
	more      shardset.Set                  // shards Subscription.lockAll found it lacks
	keyShards []int32                       // shard of each key, in the order the op visits them
	resKeys   []cid.Cid                     // keys the op reserves for its blockstore I/O, or marks while it waits; their shards are keyShards[:len(resKeys)]. For Subscribe, Unsubscribe and Release, the keys asked, in order (setKeys)
	marked    bool                          // o marks one key, of resKeys (Notifier.markBusy, markOnly)
	scope     waitScope                     // which of resKeys o waits for and marks (Notifier.needs)
	onlyHits  bool                          // a Subscribe: reserve only the keys of hits, which its check needs (G11; see commitSubscribe)
	held      []int32                       // a Subscribe: indexes in resKeys of the keys its subscriber wanted at the plan
	wake      atomic.Pointer[chan struct{}] // closed when the op releases its reservations or marks, if anyone waits (wakeOnRelease)
	nudge     atomic.Pointer[chan struct{}] // a waiting op whose marks can go dormant (op.dormant): closed when a want of its subscription ends or, for a Subscribe, begins (op.nudgeClose)

	// Plan and commit.
	io      bool                 // the plan needs the blockstore
	hits    []hit                // wanted keys, deduplicated
	store   []blocks.Block       // blocks for PutMany
	seen    map[cid.Cid]struct{} // keys of a long Subscribe or Publish, for repeated and storing
	self    [1]*Subscription     // the subscriber, in a Subscribe
	cancels []cid.Cid            // keys whose last want this op ended
	freed   []cid.Cid            // keys whose last want of the subscription's kind this op ended (Release)
	exited  chan struct{}        // close: the drain goroutine to wait for

	// Hand-over.
	targets   []target
	order     []lockEntry
	prelocked bool                  // a Subscribe's lockShared has locked the targets (o.order) before want
	slot      map[*Subscription]int // index in targets, when several hits
	slow      []*Subscription       // subscriptions this op found past WithMaxPending, to close
	step      step                  // how far step 5 got (run.go, finish)
	next      int                   // the next entry of order (stepFuncs) or slow (stepSlow)
	probe     probe                 // what Publish and Subscribe report (observe.go)

	// Pending closes (Subscription.closeSlow). An op that another op's
	// pending close found holding one of its keys (claimant) lists that
	// close in parked, and resumes it when it is done (putOp).
	pmu       sync.Mutex    // guards parked; a leaf: nothing is locked under it
	parked    []parkEntry   // pending closes to resume when o is done
	hasParked atomic.Bool   // parked is not empty: putOp's check without pmu
	park      atomic.Uint64 // o is a pending close: the generation of its current park, 0 while it runs or is not one
	pending   bool          // o is a pending close counted in Notifier.pending
}

// parkEntry is a pending close, o, parked with generation gen: the entry is
// stale once o has been resumed (o.park no longer gen), and the one resumer
// is the first to swap o.park from gen to 0.
type parkEntry struct {
	o   *op
	gen uint64
}

// enqueue lists p, a pending close parked with generation gen, for o to
// resume when it is done. The caller holds the shard lock of a key that o
// holds up (reserves, or marks with a mark that holds), or is o's own
// goroutine (op.letGo): either way o has not reached putOp.
func (o *op) enqueue(p *op, gen uint64) {
	o.pmu.Lock()
	o.parked = append(o.parked, parkEntry{o: p, gen: gen})
	o.hasParked.Store(true)
	o.pmu.Unlock()
}

// takeParked removes and returns the pending closes parked on o.
func (o *op) takeParked() []parkEntry {
	if !o.hasParked.Load() {
		return nil
	}
	o.pmu.Lock()
	parked := o.parked
	o.parked = nil
	o.hasParked.Store(false)
	o.pmu.Unlock()
	return parked
}

func newOp(shards int) *op {
	return &op{
		locks: shardset.New(shards),
		keep:  shardset.New(shards),
		more:  shardset.New(shards),
		slot:  make(map[*Subscription]int),
		seen:  make(map[cid.Cid]struct{}),
	}
}

// setKeys sets o up for a Subscribe, Unsubscribe or Release of keys by s:
// o.resKeys gets a copy of keys, and o.keyShards their shards. A copy, so
// that the caller's slice stays out of the pooled op: else it would escape,
// and every variadic call, s.Subscribe(ctx, k), would allocate it.
func (o *op) setKeys(n *Notifier, s *Subscription, keys []cid.Cid) {
	o.sub = s
	o.resKeys = append(o.resKeys, keys...)
	n.keyShards(o, keys)
}

func (n *Notifier) getOp() *op {
	o := n.ops.Get().(*op)
	o.id = n.opSeq.Add(1)
	return o
}

// putOp clears o, dropping its references so that the pool retains no block
// or subscription, and returns it to the pool. Most operations leave most
// fields empty (a Publish of one block uses neither seen, slot, freed, slow
// nor self): each is cleared only if it holds something, and a slice is cut
// to length 0 in place, which writes no pointer (a slice header written back
// whole costs a write barrier check per field, on every operation).
//
// Every op ends here, on every path (success, error, ctx, panic unwinding),
// holding no lock, its reservations and marks released: so this is where it
// resumes the pending closes that it held up (parked), after returning to
// the pool. Those need nothing of o.
func (n *Notifier) putOp(o *op) {
	if parked := n.recycle(o); len(parked) > 0 {
		n.resume(parked)
	}
}

// recycle is putOp but for the resumption: it returns the pending closes
// parked on o, for the caller to resume (see Notifier.resume).
func (n *Notifier) recycle(o *op) (parked []parkEntry) {
	parked = o.takeParked()
	o.pending = false
	o.msg, o.sub, o.why, o.from = ResponseMessage{}, nil, nil, ""
	o.closing = false
	o.locks.Clear()
	o.locked = false
	o.keep.Clear()
	o.more.Clear()
	o.keyShards = o.keyShards[:0]
	o.marked = false
	o.scope = waitAll
	o.onlyHits = false
	cut(&o.held)
	cut(&o.resKeys)
	o.io = false
	cut(&o.hits)
	cut(&o.store)
	if len(o.seen) > 0 {
		o.seen = emptiedMap(o.seen)
	}
	if o.self[0] != nil {
		o.self[0] = nil
	}
	cut(&o.cancels)
	cut(&o.freed)
	if o.exited != nil {
		o.exited = nil
	}
	cut(&o.targets)
	cut(&o.order)
	o.prelocked = false
	if len(o.slot) > 0 {
		o.slot = emptiedMap(o.slot)
	}
	cut(&o.slow)
	o.step, o.next = stepNone, 0
	o.probe = probe{}
	if !o.oversized() {
		n.ops.Put(o)
	}
	return parked
}

// opKeepCap is the most elements a slice of a pooled op may have room for:
// an op that a burst left larger (a Publish of 100,000 blocks keeps about
// 6 MB of slices) is not pooled again, as emptiedMap does for its maps.
// Otherwise a node busy enough to take it from the pool between every two
// collections would keep it for good.
const opKeepCap = 4096

// oversized reports whether one of o's slices has room for more than
// opKeepCap elements.
func (o *op) oversized() bool {
	return max(cap(o.keyShards), cap(o.resKeys), cap(o.held), cap(o.hits), cap(o.store),
		cap(o.cancels), cap(o.freed), cap(o.targets), cap(o.order), cap(o.slow)) > opKeepCap
}

// cut zeroes the elements of *s (zero) and cuts it to length 0 in place,
// keeping its capacity, if it holds any: an empty slice is left as it is,
// with no write to the header.
func cut[T any](s *[]T) {
	if len(*s) > 0 {
		zero(*s)
		*s = (*s)[:0]
	}
}

// zero zeroes the elements of s, so that the pool retains nothing they point
// to. One element, as a Publish of one block leaves in most fields, is
// assigned: clear calls memclrHasPointers, and its bulk write barrier while
// the GC marks, once per field.
func zero[T any](s []T) {
	if len(s) == 1 {
		var z T
		s[0] = z
		return
	}
	clear(s)
}

// emptiedMap returns m emptied, or a new map if m grew large: clearing costs
// as much as the largest use.
func emptiedMap[K comparable, V any](m map[K]V) map[K]V {
	if len(m) > 4096 {
		return make(map[K]V)
	}
	clear(m)
	return m
}

// report returns a copy of o.freed if want is set and it is not empty.
func (o *op) report(want bool) []cid.Cid {
	if !want || len(o.freed) == 0 {
		return nil
	}
	return slices.Clone(o.freed)
}

// repeated reports whether a Subscribe has already made k a candidate (is in
// o.hits). Short calls scan; long ones switch to o.seen.
func (o *op) repeated(k cid.Cid) bool {
	const scan = 16
	if len(o.hits) < scan {
		for i := range o.hits {
			if o.hits[i].key == k {
				return true
			}
		}
		return false
	}
	if len(o.seen) == 0 {
		for i := range o.hits {
			o.seen[o.hits[i].key] = struct{}{}
		}
	}
	if _, ok := o.seen[k]; ok {
		return true
	}
	o.seen[k] = struct{}{}
	return false
}

// storing reports whether a Publish has already put k in o.store, and if not
// counts it as put there: the caller appends it. Short lists scan; long ones
// switch to o.seen, which a Publish does not otherwise use.
func (o *op) storing(k cid.Cid) bool {
	const scan = 16
	if len(o.store) < scan {
		for _, b := range o.store {
			if b.Cid() == k {
				return true
			}
		}
		return false
	}
	if len(o.seen) == 0 {
		for _, b := range o.store {
			o.seen[b.Cid()] = struct{}{}
		}
	}
	if _, ok := o.seen[k]; ok {
		return true
	}
	o.seen[k] = struct{}{}
	return false
}

// subsOf returns the subscriptions that want h's key.
func (o *op) subsOf(h *hit) []*Subscription {
	if h.e == nil {
		return o.self[:]
	}
	return h.e.subs
}

// target returns the target of s, creating it.
func (o *op) target(s *Subscription) *target {
	if j, ok := o.slot[s]; ok {
		return &o.targets[j]
	}
	o.slot[s] = len(o.targets)
	o.targets = append(o.targets, target{s: s})
	return &o.targets[len(o.targets)-1]
}

// build creates one target per subscription that a hit reaches, with the
// message it gets.
func (o *op) build() {
	if len(o.hits) == 1 {
		o.buildOne(&o.hits[0])
		return
	}
	o.count()
	o.fill()
}

// buildOne is build for an op of one hit, such as a message of one block:
// the hit's subscriptions are distinct, so each gets a target of one entry,
// made in one pass, without count's and fill's lookups.
func (o *op) buildOne(h *hit) {
	subs := o.subsOf(h)
	stale := 0
	var blks []blocks.Block
	var keys []cid.Cid
	if h.kind == kindBlock {
		blks = make([]blocks.Block, len(subs))
		if h.e != nil {
			stale = 1
		}
	} else {
		keys = make([]cid.Cid, len(subs))
	}
	// Each target is written field by field in place, every field: an
	// append of a target literal builds it on the stack and copies it, and
	// that copy's wide loads of the narrow stores just made stall on store
	// forwarding, once per target (perf: half of buildOne at S=16).
	first := len(o.targets)
	o.targets = slices.Grow(o.targets, len(subs))[:first+len(subs)]
	for j, s := range subs {
		t := &o.targets[first+j]
		t.s, t.stale = s, stale
		t.nb, t.nh, t.nd = 0, 0, 0
		t.msg.From, t.msg.Blocks, t.msg.Haves, t.msg.DontHaves = o.from, nil, nil, nil
		switch h.kind {
		case kindBlock:
			blks[j] = h.blk
			t.nb, t.msg.Blocks = 1, blks[j:j+1:j+1]
		case kindHave:
			keys[j] = h.key
			t.nh, t.msg.Haves = 1, keys[j:j+1:j+1]
		default:
			keys[j] = h.key
			t.nd, t.msg.DontHaves = 1, keys[j:j+1:j+1]
		}
	}
}

// count creates one target per interested subscription and counts what each
// gets.
func (o *op) count() {
	for i := range o.hits {
		h := &o.hits[i]
		for _, s := range o.subsOf(h) {
			t := o.target(s)
			switch h.kind {
			case kindBlock:
				t.nb++
				if h.e != nil {
					t.stale++
				}
			case kindHave:
				t.nh++
			default:
				t.nd++
			}
		}
	}
}

// fill builds the targets' messages. All keys go in one array, carved into
// capacity-limited slices. So do all blocks, if every target that gets
// blocks gets all of the op's (as when one subscription is reached, or every
// one wants the same keys); else each such target gets an array of its own,
// for a message that one subscription keeps would keep the blocks of the
// others reachable through the shared array (found by review,
// TestPublish_KeptMessageKeepsNoOtherSubscriptionsBlock). An operation costs
// two allocations, or one and one per target that gets blocks.
func (o *op) fill() {
	nb, nc, shared := o.sizes()
	var blks []blocks.Block
	if shared {
		blks = make([]blocks.Block, nb)
	}
	keys := make([]cid.Cid, nc)
	for i := range o.targets {
		t := &o.targets[i]
		t.msg.From = o.from
		if shared {
			t.msg.Blocks, blks = carve(blks, t.nb)
		} else if t.nb > 0 {
			t.msg.Blocks = make([]blocks.Block, 0, t.nb)
		}
		t.msg.Haves, keys = carve(keys, t.nh)
		t.msg.DontHaves, keys = carve(keys, t.nd)
	}
	for i := range o.hits {
		h := &o.hits[i]
		for _, s := range o.subsOf(h) {
			t := &o.targets[o.slot[s]]
			switch h.kind {
			case kindBlock:
				t.msg.Blocks = append(t.msg.Blocks, h.blk)
			case kindHave:
				t.msg.Haves = append(t.msg.Haves, h.key)
			default:
				t.msg.DontHaves = append(t.msg.DontHaves, h.key)
			}
		}
	}
}

// sizes returns what fill allocates: the blocks (nb) and the keys, HAVEs
// and DONT_HAVEs (nc) of every target's message, and whether every target
// that gets blocks gets every hit block, so that their messages can share
// one array of blocks (shared).
func (o *op) sizes() (nb, nc int, shared bool) {
	hitBlocks := 0
	for i := range o.hits {
		if o.hits[i].kind == kindBlock {
			hitBlocks++
		}
	}
	shared = true
	for i := range o.targets {
		t := &o.targets[i]
		nb += t.nb
		nc += t.nh + t.nd
		if t.nb != 0 && t.nb != hitBlocks {
			shared = false
		}
	}
	return nb, nc, shared
}

// carve returns an empty slice of capacity n at the front of arena, and the
// rest; nil when n is 0, so that a message's unused fields are nil.
func carve[T any](arena []T, n int) (part, rest []T) {
	if n == 0 {
		return nil, arena
	}
	return arena[:0:n], arena[n:]
}

func (o *op) accept(t *target) {
	if t.s.accept(&t.msg, t.stale) {
		o.slow = append(o.slow, t.s)
	}
}
