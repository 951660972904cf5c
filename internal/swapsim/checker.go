package swapsim

import (
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// Violation is a kind of invariant failure. One fault can trip several kinds:
// a stale CANCEL, for one, also makes the peers drop the want it overtook, so
// the request stalls and its block counts as lost.
type Violation int

const (
	LostBlock      Violation = iota // a request that was not cancelled never got a block (it stalled)
	Incomplete                      // a request that was not cancelled ended without every block
	DuplicateBlock                  // a request got the block of a key twice
	UnexpectedKey                   // a message named a key the request never asked for
	NotStored                       // a request got a block the blockstore did not hold yet
	Unsolicited                     // a remote block was stored while nobody wanted it
	StaleCancel                     // a CANCEL went out while a want sent before it was surely live, or after a Want found the block
	ExtraCancel                     // a CANCEL that no ended want accounts for
	MissingCancel                   // a want sent on the wire ended, with its key's last, without a CANCEL
	IndexNotEmpty                   // wants left in the index once every session was closed
	GoroutineLeak                   // goroutines left once the client was closed
	ImplError                       // an operation of the client failed, or ignored a failed blockstore check
	numViolations
)

var violationNames = [numViolations]string{
	"lost block", "incomplete request", "duplicate block", "unexpected key", "delivered before stored",
	"unsolicited store", "stale cancel", "extra cancel", "missing cancel",
	"index not empty", "goroutine leak", "client error",
}

func (v Violation) String() string { return violationNames[v] }

// The checker follows, key by key, what the client did and what went on the
// wire, and flags what contradicts the contract (SPEC.md). Every event on a
// key is recorded under that key's shard lock, so the events of one key are
// totally ordered. Events that the client's own critical sections produce
// (the cancel function, the blockstore's PutMany) are recorded while those
// run; the driver records the others just before or just after its calls:
//
//	SUB-START  before Subscribe(K)          SUB-RETURN (= WANT)  after it returns
//	END-START  before Unsubscribe or Remove END-RETURN           after it returns
//	PUB-START  before Publish of K's block  PUB-END              after it returns
//	STORE      inside PutMany               CANCEL               inside the cancel function
//	DELIVERED  when the session reads K's block
//	FOUND      after SUB-RETURN, if the Want returned K's block itself (a Fetch hit)
//
// A want is "possibly live" from SUB-START until its end is certain and every
// publish and Subscribe of K that could still report that end has returned:
// the end is certain at END-RETURN, and also at DELIVERED when the client ends
// wants synchronously (Impl.SyncCancels). A WANT goes to the peers when K was
// not stored at SUB-START (the client asks peers only for blocks its
// blockstore check missed, as boxo does), or if the check may have missed
// after all: K is not stored at SUB-RETURN either (the store that the check
// waited for failed), or a Get or Has of K failed meanwhile (a client that
// takes a failed check for a miss, as boxo's blockservice does, asks the
// peers); it is "awaiting" a CANCEL when K is
// still not stored at SUB-RETURN, and "surely live" if, in addition, no
// publish of K's block is in progress — until END-START or the next PUB-START.
//
// The checks, each sound for a client that keeps the contract:
//
//   - StaleCancel: a CANCEL(K) while a want of K is surely live. Such a want
//     began before the CANCEL and nothing could have ended it, so the CANCEL
//     overtook it; a peer that honours it drops a want the session still has.
//     Also a CANCEL(K) after a Want that returned K's block from the
//     blockstore (FOUND, after SUB-RETURN: a Fetch hit, which the Impl
//     reports through the Want's context). That Want took effect with K
//     stored, when no want of K was left: the Publish that stored K ended
//     every want of K at once, and a Subscribe since finds K stored (the
//     simulator never deletes a block, nor stores one behind the client's
//     back). So each CANCEL(K) was due from an operation before the Want,
//     and G5 has it return before the Want does. (A Fetch hit that skips its
//     second read of K's version returns while the Publish whose block it
//     found has yet to end a want of K and report it.) Not while a Subscribe
//     of K is under way, though: the contract lets a client report a want
//     that its own Subscribe's check satisfied ("need not be reported"), or
//     that a failed check ended, and this library does neither, but the
//     check is of G5, not of how wants are committed.
//   - ExtraCancel: a CANCEL(K) when every possibly-live want of K is
//     "consumed". A CANCEL consumes the wants whose Subscribe returned before
//     it: they began before it, so they belong to the epoch it closes or an
//     earlier one, and each epoch (a maximal stretch in which K is wanted) has
//     at most one CANCEL. A want whose Subscribe has not returned may have
//     begun and ended an epoch already: it accounts for one CANCEL ("used"),
//     and is consumed once it returns. (An Impl whose Want of K makes
//     several wants of K one after the other, as compat's does, says how
//     many with wantEpochs: its Want accounts for that many CANCELs, and is
//     consumed at its return only if it used them all.)
//   - MissingCancel: when K has no possibly-live want left, it must have had a
//     CANCEL since the last WANT awaiting one. Such a WANT was sent while its
//     want was live (K was not stored, so nothing had delivered it), so its
//     epoch ends after it, and with a CANCEL: no Subscribe created it with the
//     block at hand (SPEC G5).
//   - Unsolicited: the first STORE of K with no possibly-live want of K and no
//     local add of K started.
//   - NotStored: DELIVERED(K) before STORE(K), and Has(K) false (SPEC G3).
//
// The alternative that comes to mind first, "per key, WANTs and CANCELs
// alternate and the last event is a CANCEL", is wrong for a correct client: a
// WANT can follow its epoch's CANCEL when the block arrives between Subscribe
// and the WANT, and an epoch can end with a CANCEL before its only WANT went
// out. Those WANTs are exactly the ones not awaiting a CANCEL here.
type checker struct {
	syncEnds bool // Impl.SyncCancels: DELIVERED makes a want's end certain
	epochs   int  // wantEpochs: the epochs of K that one Want of K may make, one after the other
	seed     maphash.Seed
	shards   [checkShards]checkShard

	counts [numViolations]atomic.Int64

	exMu     sync.Mutex // guards examples; taken under a shard's mu
	examples []string
}

const (
	checkShards = 64
	maxExamples = 4 // kept per kind of violation
)

type checkShard struct {
	mu   sync.Mutex // guards keys and every keyState in it
	keys map[cid.Cid]*keyState
	_    [40]byte // keep neighbouring locks off one cache line
}

// keyState is what the checker knows of one key.
type keyState struct {
	wants    []want // possibly-live wants
	ops      int32  // publishes of K's block and Subscribes of K in progress
	pubs     int32  // publishes of K's block in progress
	awaiting int32  // WANTs awaiting a CANCEL (see checker)
	gen      uint32 // CANCELs so far: a peer drops answers to WANTs of an older gen
	puts     int32  // PutManys of K's block in progress
	stored   bool   // a PutMany of K's block has returned nil
	misread  uint32 // Gets and Hases of K that failed
	found    bool   // a Want returned K's block from the blockstore (FOUND): no CANCEL(K) may follow
	local    bool   // a local add of K has begun
	firstPub int64  // when K's block was first handed to the client (sim clock)
}

// storing reports whether K is stored or being stored: a PutMany of its
// block has succeeded or is in progress. A failed PutMany wrote nothing (the
// faults the simulator injects fail before writing), so it leaves no trace.
func (ks *keyState) storing() bool { return ks.puts > 0 || ks.stored }

// want is one request's want of one key.
type want struct {
	req      uint64
	sent     bool   // a WANT went to the peers (see checker)
	misread  uint32 // keyState.misread at SUB-START
	returned bool   // Subscribe returned
	sure     bool   // surely live
	consumed bool   // a CANCEL after SUB-RETURN accounts for its epoch
	used     int    // CANCELs before SUB-RETURN put down to its epochs (see cancelKey)
	over     bool   // its end is certain
	ending   bool   // END-START came: the request is ending it (before SUB-RETURN, a cut-short call)
}

func newChecker(syncEnds bool) *checker {
	c := &checker{syncEnds: syncEnds, epochs: 1, seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].keys = make(map[cid.Cid]*keyState)
	}
	return c
}

// lock locks k's shard and returns it with k's state, created if need be.
func (c *checker) lock(k cid.Cid) (*checkShard, *keyState) {
	sh := &c.shards[maphash.String(c.seed, k.KeyString())&(checkShards-1)]
	sh.mu.Lock()
	ks := sh.keys[k]
	if ks == nil {
		ks = &keyState{}
		sh.keys[k] = ks
	}
	return sh, ks
}

// violate counts a violation and keeps its description if it is among the
// first of its kind.
func (c *checker) violate(v Violation, format string, args ...any) {
	if c.counts[v].Add(1) > maxExamples {
		return
	}
	msg := v.String() + ": " + fmt.Sprintf(format, args...)
	c.exMu.Lock()
	c.examples = append(c.examples, msg)
	c.exMu.Unlock()
}

// find returns req's latest want of K: a request that retries a failed
// Subscribe has a want per attempt, and only the last can be live.
func (ks *keyState) find(req uint64) *want {
	for i := len(ks.wants) - 1; i >= 0; i-- {
		if ks.wants[i].req == req {
			return &ks.wants[i]
		}
	}
	return nil
}

// reap drops the wants that are no longer possibly live and, if none is left,
// checks that no WANT still awaits a CANCEL.
func (c *checker) reap(k cid.Cid, ks *keyState) {
	if ks.ops > 0 {
		return
	}
	live := ks.wants[:0]
	for _, w := range ks.wants {
		if !w.over {
			live = append(live, w)
		}
	}
	clear(ks.wants[len(live):])
	ks.wants = live
	if len(live) == 0 {
		ks.wants = nil
		if ks.awaiting > 0 {
			c.violate(MissingCancel, "%s: %d WANT(s) sent, every want ended, no CANCEL", k, ks.awaiting)
			ks.awaiting = 0
		}
	}
}

// subStart records SUB-START of req's wants of keys, and sets sent[i] when a
// WANT for keys[i] is to go to the peers.
func (c *checker) subStart(req uint64, keys []cid.Cid, sent []bool) {
	for i, k := range keys {
		sh, ks := c.lock(k)
		ks.ops++
		sent[i] = !ks.storing()
		ks.wants = append(ks.wants, want{req: req, sent: sent[i], misread: ks.misread})
		sh.mu.Unlock()
	}
}

// subReturn records SUB-RETURN: ok says Subscribe succeeded (if not, it added
// no want). gens[i] is the wire generation of keys[i]'s WANT. It sets sent[i]
// if the client's check may have missed after all (see checker), so that
// the client sends a WANT.
func (c *checker) subReturn(req uint64, keys []cid.Cid, ok bool, sent []bool, gens []uint32) {
	for i, k := range keys {
		sh, ks := c.lock(k)
		ks.ops--
		if w := ks.find(req); w != nil {
			switch {
			case !ok:
				w.over = true
			default:
				w.returned = true
				w.consumed = w.used >= c.epochs // its epochs had their CANCELs already
				if w.ending {
					// The request began to end this want (a call cut short
					// before its Want returned): it sends no WANT, and the
					// CANCELs of its end may already have gone out.
					w.sent, sent[i] = false, false
					break
				}
				if !w.sent && (!ks.storing() || ks.misread != w.misread) {
					w.sent, sent[i] = true, true
				}
				if w.sent && !ks.storing() {
					ks.awaiting++
					w.sure = ks.pubs == 0
				}
			}
		}
		gens[i] = ks.gen
		c.reap(k, ks)
		sh.mu.Unlock()
	}
}

// endStart records END-START: req is about to end its wants of keys.
func (c *checker) endStart(req uint64, keys []cid.Cid) {
	for _, k := range keys {
		sh, ks := c.lock(k)
		if w := ks.find(req); w != nil {
			w.sure = false
			w.ending = true
		}
		sh.mu.Unlock()
	}
}

// endReturn records END-RETURN: req's wants of keys have ended.
func (c *checker) endReturn(req uint64, keys []cid.Cid) {
	for _, k := range keys {
		sh, ks := c.lock(k)
		if w := ks.find(req); w != nil {
			w.over = true
		}
		c.reap(k, ks)
		sh.mu.Unlock()
	}
}

// delivered records that req read k's block. It returns when the block was
// first handed to the client, and whether STORE(K) had returned.
func (c *checker) delivered(req uint64, k cid.Cid) (firstPub int64, stored bool) {
	sh, ks := c.lock(k)
	defer sh.mu.Unlock()
	if w := ks.find(req); w != nil {
		w.sure = false
		w.over = w.over || c.syncEnds
	}
	c.reap(k, ks)
	return ks.firstPub, ks.stored
}

// pubStart records PUB-START for the blocks of a message about to be handed
// to the client at time now; local says it is a local add.
func (c *checker) pubStart(blks []blocks.Block, local bool, now int64) {
	for _, b := range blks {
		sh, ks := c.lock(b.Cid())
		ks.ops++
		ks.pubs++
		for i := range ks.wants {
			ks.wants[i].sure = false
		}
		ks.local = ks.local || local
		if ks.firstPub == 0 {
			ks.firstPub = now
		}
		sh.mu.Unlock()
	}
}

// pubEnd records PUB-END for the blocks of a message.
func (c *checker) pubEnd(blks []blocks.Block) {
	for _, b := range blks {
		sh, ks := c.lock(b.Cid())
		ks.ops--
		ks.pubs--
		c.reap(b.Cid(), ks)
		sh.mu.Unlock()
	}
}

// storing records the start of a PutMany; it checks Unsolicited.
func (c *checker) storing(blks []blocks.Block) {
	for _, b := range blks {
		sh, ks := c.lock(b.Cid())
		if !ks.storing() && !ks.local && len(ks.wants) == 0 {
			c.violate(Unsolicited, "%s stored, nobody wanted it and it was not added locally", b.Cid())
		}
		ks.puts++
		sh.mu.Unlock()
	}
}

// stored records that a PutMany returned nil.
func (c *checker) stored(blks []blocks.Block) {
	for _, b := range blks {
		sh, ks := c.lock(b.Cid())
		ks.puts--
		ks.stored = true
		sh.mu.Unlock()
	}
}

// storeFailed records that a PutMany returned an error, having written
// nothing.
func (c *checker) storeFailed(blks []blocks.Block) {
	for _, b := range blks {
		sh, ks := c.lock(b.Cid())
		ks.puts--
		sh.mu.Unlock()
	}
}

// found records FOUND: a Want that returned keys' blocks from the
// blockstore has returned.
func (c *checker) found(keys []cid.Cid) {
	for _, k := range keys {
		sh, ks := c.lock(k)
		ks.found = true
		sh.mu.Unlock()
	}
}

// misread records that a Get or Has of k failed.
func (c *checker) misread(k cid.Cid) {
	sh, ks := c.lock(k)
	ks.misread++
	sh.mu.Unlock()
}

// cancel is the client's cancel function: it records CANCEL for keys.
func (c *checker) cancel(keys []cid.Cid) {
	for _, k := range keys {
		sh, ks := c.lock(k)
		c.cancelKey(k, ks)
		sh.mu.Unlock()
	}
}

func (c *checker) cancelKey(k cid.Cid, ks *keyState) {
	stale, accounted := 0, false
	for i := range ks.wants {
		w := &ks.wants[i]
		if w.sure {
			stale++
		}
		accounted = accounted || (w.returned && !w.consumed)
	}
	if !accounted {
		// Only a want whose Subscribe is still under way can account for it:
		// one such want for each CANCEL, since a want has one epoch (or
		// c.epochs: wantEpochs). Any of them will do: which want's epoch a
		// CANCEL closes changes no count. (Taking every want under way as
		// enough let any number of CANCELs through while a Subscribe of K
		// ran: review.)
		for i := range ks.wants {
			if w := &ks.wants[i]; !w.returned && w.used < c.epochs {
				w.used++
				accounted = true
				break
			}
		}
	}
	for i := range ks.wants {
		w := &ks.wants[i]
		w.consumed = w.consumed || w.returned
		w.sure = false
	}
	if stale > 0 {
		c.violate(StaleCancel, "%s: CANCEL while %d want(s) sent before it were live", k, stale)
	}
	if ks.found && ks.ops == ks.pubs {
		c.violate(StaleCancel, "%s: CANCEL after a Want that found its block in the blockstore returned", k)
	}
	if !accounted {
		c.violate(ExtraCancel, "%s: CANCEL with no want left to account for it", k)
	}
	ks.awaiting = 0
	ks.gen++
}

// gen returns k's wire generation: a peer answers a WANT only if no CANCEL
// of its key came after it.
func (c *checker) gen(k cid.Cid) uint32 {
	sh, ks := c.lock(k)
	defer sh.mu.Unlock()
	return ks.gen
}

// finish flags the WANTs that still await a CANCEL once everything has ended.
func (c *checker) finish() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for k, ks := range sh.keys {
			if ks.awaiting > 0 {
				c.violate(MissingCancel, "%s: %d WANT(s) never cancelled", k, ks.awaiting)
			}
		}
		sh.mu.Unlock()
	}
}

// firstExamples returns the descriptions kept of the first violations.
func (c *checker) firstExamples() []string {
	c.exMu.Lock()
	defer c.exMu.Unlock()
	return slices.Clone(c.examples)
}

// total returns the counts of violations.
func (c *checker) total() (out [numViolations]int64) {
	for i := range c.counts {
		out[i] = c.counts[i].Load()
	}
	return out
}
