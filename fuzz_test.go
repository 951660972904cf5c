package notifier_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// FuzzNotifierModel decodes its input into a sequence of operations
// (NewSubscription, NewRequest, Fetch, Subscribe, Unsubscribe, Remove, local and remote Publish
// with blocks, HAVEs, DONT_HAVEs, duplicates and undefined CIDs, Close,
// blockstore faults switched on and off, reads from Messages(), blocks written
// to and deleted from the blockstore behind the Notifier's back), runs it against a Notifier
// and against the sequential model in model_test.go, and after every step
// compares the errors, the messages each subscription received, the keys
// reported to the cancel function, what Fetch returned and how often it
// called its newFunc, Stats, Err and the blockstore contents. Some inputs
// build the Notifier WithFailedCheckAsMiss: then a failed Get is a miss, and
// the test also compares the errors handed to the option's function.
//
// Each run happens in a synctest bubble so that the goroutines that drain
// channel backlogs settle after every step: that makes what sits in each
// channel exact and comparable.
//
// In stall mode (see fuzzDecoder) the input also chooses which Subscribe,
// Fetch and Publish calls stall in the blockstore, and when, and how, each stalled call
// is released, with other operations running meanwhile: every operation runs
// on its own goroutine, and the model says whether it returns, stalls or
// waits for a reservation; stall_fuzz_test.go has the driver.
//
// The input format is in fuzzDecoder; seeds are in testdata/fuzz.
func FuzzNotifierModel(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		defer stallWatchdog("FuzzNotifierModel", fuzzWatchdog)()
		synctest.Test(t, func(t *testing.T) { runFuzzModel(t, data) })
	})
}

const (
	fuzzKeys     = 8   // size of the key universe
	fuzzMaxSteps = 300 // bound on the work of one input
)

// fuzzBlocks are the blocks of the key universe; key i is fuzzBlocks[i].Cid().
var fuzzBlocks = func() (bs [fuzzKeys]blocks.Block) {
	for i := range bs {
		bs[i] = blocks.NewBlock(fmt.Appendf(nil, "fuzz block %d", i))
	}
	return bs
}()

// fuzzKeyRank is the order of the keys by the bytes of their CIDs
// (KeyString), in which a waiter chooses the key it marks: the least of
// those it must wait for (busyKey). It is not the order of the key indices.
var fuzzKeyRank = func() (rank [fuzzKeys]int) {
	for i := range rank {
		for j := range rank {
			if fuzzBlocks[j].Cid().KeyString() < fuzzBlocks[i].Cid().KeyString() {
				rank[i]++
			}
		}
	}
	return rank
}()

// leastKey returns the least of keys by fuzzKeyRank, the one that a waiter
// that must wait for all of them marks, or -1 if there is none.
func leastKey(keys []int) int {
	least := -1
	for _, k := range keys {
		if k >= 0 && (least < 0 || fuzzKeyRank[k] < fuzzKeyRank[least]) {
			least = k
		}
	}
	return least
}

func fuzzKeyIndex(c cid.Cid) int {
	for i, b := range fuzzBlocks {
		if b.Cid() == c {
			return i
		}
	}
	return undefKey
}

// fuzzHarness runs operations on a Notifier and on the model side by side.
type fuzzHarness struct {
	t     *testing.T
	m     *model
	n     *notifier.Notifier
	fbs   *faultbs.Store        // nil when notify-only
	inner blockstore.Blockstore // what fbs wraps, read directly for comparisons
	subs  []*fuzzSub            // parallel to m.subs (syncSubs)
	steps []string              // what has run, for failure messages
	// newFuncs: calls of Fetch's newFunc by the Fetch calls that returned
	// during the current step (model.newFuncs counts them when the model's
	// Fetch takes effect, which is when the real one returns).
	newFuncs int

	// Stall mode (stall_fuzz_test.go).
	stalls  bool      // the input may stall blockstore calls
	armed   bool      // the next Subscribe, Fetch or Publish gets a stall point
	stalled []*fuzzOp // parked in the blockstore, holding reservations, oldest first
	waiter  *fuzzOp   // waiting for a reservation of a stalled one; at most one
	// waiterKeys: the keys waiter needs (waitFor) as it waits; it marks one
	// of them (fuzzOp.mark), and a later operation on that one waits behind
	// it (Notifier.markBusy). Any of them may be the one it marks after a
	// release, so the driver's rules for determinism count them all.
	waiterKeys []int
	mu         sync.Mutex // guards cancels, taken and fuzzSub.got: the callbacks run on the operations' goroutines
	cancels    []int      // keys the cancel function received during the current step
	// taken: the key named by each error handed to the function of
	// WithFailedCheckAsMiss during the current step (onTaken).
	taken []int
}

// fuzzSub is the real side of one model subscription.
type fuzzSub struct {
	s   *notifier.Subscription
	got []fzMsg // func subscription: received during the current step
}

func runFuzzModel(t *testing.T, data []byte) *fuzzHarness {
	d := &fuzzDecoder{data: data}
	h := newFuzzHarness(t, d)
	for step := 0; step < fuzzMaxSteps && !d.done(); step++ {
		h.step(d)
		h.compare()
		h.checkPendingAlone()
	}
	h.close()
	h.compare()
	if *fuzzTrace {
		t.Logf("steps:\n%s", strings.Join(h.steps, "\n"))
	}
	return h
}

var fuzzTrace = flag.Bool("fuzz-trace", false, "FuzzNotifierModel: log the steps of every input, passed or not")

func newFuzzHarness(t *testing.T, d *fuzzDecoder) *fuzzHarness {
	c0, c1 := d.byte(), d.byte()
	withBS := c0&7 != 7
	stalls := withBS && c0&4 != 0
	checkMiss := c0&0x80 != 0
	shards := []int{1, 2, 64}[int(c0>>3)%3]
	buf := []int{0, 1, 2, 32}[c1&3]
	maxPending := []int{0, 1, 2}[int(c1>>2)%3]
	h := &fuzzHarness{t: t, m: newModel(withBS, buf, maxPending), stalls: stalls}
	h.m.held = h.waiterHolds
	h.m.checkMiss = checkMiss
	opts := []notifier.Option{
		notifier.WithShards(shards),
		notifier.WithBufferSize(buf),
		notifier.WithMaxPending(maxPending),
		notifier.WithCancelFunc(h.onCancel),
	}
	if checkMiss {
		opts = append(opts, notifier.WithFailedCheckAsMiss(h.onTaken))
	}
	if !withBS {
		h.n = notifier.New(nil, opts...)
	} else {
		h.inner = blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
		h.fbs = faultbs.New(h.inner)
		h.n = notifier.New(&gateStore{next: h.fbs}, opts...)
	}
	t.Cleanup(h.unstick)
	h.logf("New(bs=%v, stalls=%v, shards=%d, buf=%d, maxPending=%d, failedCheckAsMiss=%v)", withBS, stalls, shards, buf, maxPending, checkMiss)
	return h
}

func (h *fuzzHarness) onCancel(keys []cid.Cid) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, k := range keys {
		h.cancels = append(h.cancels, fuzzKeyIndex(k))
		keys[i] = cid.Undef // the slice is the callee's: scribbling must harm nobody
	}
}

// onTaken is the function of WithFailedCheckAsMiss: it records the key
// that err names, checking that err wraps the fault that the test injected
// (faultbs.ErrInjected, which the stalled calls' failures wrap too). It
// runs holding no lock of the Notifier, so it may call it: Wanted takes the
// key's shard lock, and would deadlock were that held. Outside stall mode
// the call runs alone, and has taken effect: the key is wanted.
func (h *fuzzHarness) onTaken(err error) {
	k := undefKey
	for i, b := range fuzzBlocks {
		if strings.Contains(err.Error(), b.Cid().String()) {
			k = i
		}
	}
	switch {
	case !errors.Is(err, faultbs.ErrInjected):
		h.t.Errorf("WithFailedCheckAsMiss's function got %v, which does not wrap %v", err, faultbs.ErrInjected)
	case k == undefKey:
		h.t.Errorf("WithFailedCheckAsMiss's function got %v, which names no key", err)
	case !h.n.Wanted(fuzzBlocks[k].Cid()) && !h.stalls:
		h.t.Errorf("WithFailedCheckAsMiss's function got %v before its call took effect: k%d is not wanted", err, k)
	}
	h.mu.Lock()
	h.taken = append(h.taken, k)
	h.mu.Unlock()
}

// takenAgrees reports whether the errors handed to WithFailedCheckAsMiss's
// function in the current step so far are those that m says, by the keys
// they name.
func (h *fuzzHarness) takenAgrees(m *model) bool {
	h.mu.Lock()
	got := slices.Sorted(slices.Values(h.taken))
	h.mu.Unlock()
	return slices.Equal(got, slices.Sorted(slices.Values(m.taken)))
}

// onMessage records a message taken by a func subscription. It checks store
// before notify (G3) and then scribbles over the message, which is the
// receiver's to keep and modify: a message sharing slices with another
// subscription's would show up corrupted in the comparison.
func (h *fuzzHarness) onMessage(fs *fuzzSub, msg notifier.ResponseMessage) {
	if h.inner != nil {
		for _, b := range msg.Blocks {
			if ok, err := h.inner.Has(context.Background(), b.Cid()); !ok || err != nil {
				h.t.Errorf("G3: block %s delivered before it was stored (Has = %v, %v)", b.Cid(), ok, err)
			}
		}
	}
	m := h.convert(msg)
	h.mu.Lock()
	fs.got = append(fs.got, m)
	h.mu.Unlock()
	clear(msg.Blocks)
	clear(msg.Haves)
	clear(msg.DontHaves)
}

func (h *fuzzHarness) convert(msg notifier.ResponseMessage) fzMsg {
	m := fzMsg{From: msg.From}
	for _, b := range msg.Blocks {
		k := fuzzKeyIndex(b.Cid())
		if k >= 0 && !slices.Equal(b.RawData(), fuzzBlocks[k].RawData()) {
			h.t.Errorf("block %s delivered with the wrong data", b.Cid())
		}
		m.Blocks = append(m.Blocks, k)
	}
	for _, c := range msg.Haves {
		m.Haves = append(m.Haves, fuzzKeyIndex(c))
	}
	for _, c := range msg.DontHaves {
		m.DontHaves = append(m.DontHaves, fuzzKeyIndex(c))
	}
	slices.Sort(m.Blocks)
	slices.Sort(m.Haves)
	slices.Sort(m.DontHaves)
	return m
}

func (h *fuzzHarness) logf(format string, args ...any) {
	h.steps = append(h.steps, fmt.Sprintf("%3d  ", len(h.steps))+fmt.Sprintf(format, args...))
}

func (h *fuzzHarness) failf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("%s\nsteps:\n%s\nmodel: %s", fmt.Sprintf(format, args...), strings.Join(h.steps, "\n"), h.m.describe())
}

// checkErr compares an operation's error with the model's.
func (h *fuzzHarness) checkErr(op string, got, want error) {
	h.t.Helper()
	h.logf("%s -> %v", op, got)
	if want == nil && got != nil || want != nil && !errors.Is(got, want) {
		h.failf("%s returned %v, model says %v", op, got, want)
	}
}

// step decodes and runs one operation.
func (h *fuzzHarness) step(d *fuzzDecoder) {
	ops := byte(16)
	if h.stalls {
		ops = 20
	}
	switch op := d.byte() % ops; op {
	case 0, 1:
		switch b := d.byte(); {
		case b >= 0xf8:
			h.newRequest()
		case b >= 0xe0:
			cancelled := d.cancelled()
			h.fetch(d.key(), cancelled)
		default:
			h.newSubscription(b)
		}
	case 2, 3, 4:
		if i, ok := h.pick(d); ok {
			cancelled := d.cancelled()
			h.subscribe(i, d.keys(4), cancelled)
		}
	case 5:
		if i, ok := h.pick(d); ok {
			h.unsubscribe(i, d.keys(4))
		}
	case 6:
		if i, ok := h.pick(d); ok {
			h.remove(i)
		}
	case 7, 8, 9, 10:
		from := ""
		if op >= 9 {
			from = []string{"peerA", "peerB"}[d.byte()&1]
		}
		cancelled := d.cancelled()
		blks := d.blocks(4)
		h.publish(from, blks, d.keys(3), d.keys(3), cancelled)
	case 11:
		h.close()
	case 12:
		h.m.getFail = !h.m.getFail
		h.setFault(faultbs.Get, h.m.getFail)
	case 13:
		h.m.putFail = !h.m.putFail
		h.setFault(faultbs.PutMany, h.m.putFail)
	case 14:
		if i, ok := h.pick(d); ok {
			h.read(i)
		}
	case 15:
		if b := d.byte(); b&0x80 == 0 {
			h.storeBehindTheBack(b % fuzzKeys)
		} else {
			h.collect(b % fuzzKeys)
		}
	case 16, 17:
		h.armed = true
		h.logf("arm: the next Subscribe, Fetch or Publish stalls in its first blockstore call")
	case 18, 19:
		h.releaseOp(d.byte(), ioOutcome(d.byte()%4))
	}
}

func (h *fuzzHarness) pick(d *fuzzDecoder) (int, bool) {
	b := d.byte()
	if len(h.subs) == 0 {
		return 0, false
	}
	return int(b) % len(h.subs), true
}

// compare checks everything observable against the model once the step's
// goroutines have settled, and starts a new step.
func (h *fuzzHarness) compare() {
	h.t.Helper()
	synctest.Wait()
	h.syncSubs()
	h.mu.Lock()
	cancels, taken := h.cancels, h.taken
	got := make([][]fzMsg, len(h.subs))
	for i, fs := range h.subs {
		got[i], fs.got = fs.got, nil
	}
	h.cancels, h.taken = nil, nil
	h.mu.Unlock()
	slices.Sort(cancels)
	slices.Sort(h.m.cancels)
	if !slices.Equal(cancels, h.m.cancels) {
		h.failf("cancel function got %v, model says %v", cancels, h.m.cancels)
	}
	h.m.cancels = nil
	if len(taken) > 0 {
		h.logf("WithFailedCheckAsMiss's function got errors naming %s", keyNames(taken))
	}
	slices.Sort(taken)
	slices.Sort(h.m.taken)
	if !slices.Equal(taken, h.m.taken) {
		h.failf("WithFailedCheckAsMiss's function got errors naming %v, model says %v", keyNames(taken), keyNames(h.m.taken))
	}
	h.m.taken = nil
	if h.newFuncs != h.m.newFuncs {
		h.failf("Fetch called newFunc %d times, model says %d", h.newFuncs, h.m.newFuncs)
	}
	h.newFuncs, h.m.newFuncs = 0, 0
	want := h.m.stats()
	want.Subscriptions += h.heldRequests()
	if got := h.n.Stats(); got != want {
		h.failf("Stats() = %+v, model says %+v (%d of them made by a Fetch still parked or waiting)", got, want, h.heldRequests())
	}
	for i, ms := range h.m.subs {
		h.compareSub(i, ms, h.subs[i], got[i])
	}
	h.compareWants()
	for k := range fuzzKeys {
		if h.inner == nil {
			break
		}
		if ok, _ := h.inner.Has(context.Background(), fuzzBlocks[k].Cid()); ok != h.m.stored[k] {
			h.failf("blockstore has k%d = %v, model says %v", k, ok, h.m.stored[k])
		}
	}
}

func (h *fuzzHarness) compareSub(i int, ms *mSub, fs *fuzzSub, got []fzMsg) {
	h.t.Helper()
	if ms.fn {
		if !slices.EqualFunc(got, ms.got, fzMsg.equal) {
			h.failf("sub[%d] received %v, model says %v", i, got, ms.got)
		}
		ms.got = nil
	} else if got, want := len(fs.s.Messages()), min(len(ms.queue), h.m.buf); got != want {
		h.failf("sub[%d]: %d messages in the channel, model says %d", i, got, want)
	}
	if err := fs.s.Err(); ms.err == nil && err != nil || ms.err != nil && !errors.Is(err, ms.err) {
		h.failf("sub[%d].Err() = %v, model says %v", i, err, ms.err)
	}
}

func fuzzCtx(cancelled bool) context.Context {
	if !cancelled {
		return context.Background()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func fuzzCids(keys []int) []cid.Cid {
	cs := make([]cid.Cid, len(keys))
	for i, k := range keys {
		if k >= 0 {
			cs[i] = fuzzBlocks[k].Cid()
		}
	}
	return cs
}

func keyNames(keys []int) string {
	var names []string
	for _, k := range keys {
		switch k {
		case undefKey:
			names = append(names, "undef")
		case nilBlock:
			names = append(names, "nil")
		case undefBlck:
			names = append(names, "undef-block")
		default:
			names = append(names, fmt.Sprintf("k%d", k))
		}
	}
	return "[" + strings.Join(names, " ") + "]"
}

// fuzzDecoder reads operations from fuzz input. The format, byte by byte:
//
//	config: c0 (bits 0-2: 7 = notify only; bits 3-7 mod 3: shards 1, 2, 64;
//	            bit 7 also: set = WithFailedCheckAsMiss),
//	        c1 (bits 0-1: buffer 0, 1, 2, 32; bits 2-7 mod 3: max pending 0, 1, 2)
//	then operations, each an opcode byte mod 16 and its arguments:
//	  0-1   NewSubscription  b: bits 0-1 session ID, bit 2 set = channel, clear = func;
//	                         b >= 0xf8: NewRequest instead;
//	                         0xe0 <= b < 0xf8: Fetch instead, then ctx, key
//	  2-4   Subscribe        sub, ctx, n (mod 5), n keys
//	  5     Unsubscribe      sub, n (mod 5), n keys
//	  6     Remove           sub
//	  7-8   Publish local    ctx, n (mod 5), n blocks, n (mod 4) haves, n (mod 4) donthaves
//	  9-10  Publish remote   peer (bit 0), then as local
//	  11    Close
//	  12    toggle blockstore Get failing
//	  13    toggle blockstore PutMany failing
//	  14    Read one message  sub
//	  15    behind the Notifier's back, b: bit 7 clear, store key b mod 8's
//	        block in the blockstore; set, delete it (garbage collection)
//
// In stall mode (c0 bits 0-2 are 4, 5 or 6: with a blockstore) the opcode is
// taken mod 20, and:
//
//	16-17 Arm              the next Subscribe, Fetch or Publish gets a stall point:
//	                       its first blockstore call, if any, parks
//	18-19 Release          slot, outcome: slot mod the number of parked calls,
//	                       oldest first (one more: cancel the context of the
//	                       operation waiting for a reservation, if it has
//	                       one); outcome mod 4: pass, fail, torn (do the
//	                       work, then fail), cancel the operation's context
//
// sub is an index mod the number of subscriptions created so far; ctx is
// cancelled when it is 15 mod 16; a key is byte mod 8 except 0xff, cid.Undef;
// a block is a key's block except 0xff, nil, and 0xfe, a block with an
// undefined CID. Missing bytes read as zero.
type fuzzDecoder struct {
	data []byte
	pos  int
}

func (d *fuzzDecoder) done() bool { return d.pos >= len(d.data) }

func (d *fuzzDecoder) byte() byte {
	if d.done() {
		return 0
	}
	d.pos++
	return d.data[d.pos-1]
}

func (d *fuzzDecoder) cancelled() bool { return d.byte()%16 == 15 }

func (d *fuzzDecoder) keys(max int) []int {
	n := int(d.byte()) % (max + 1)
	ks := make([]int, n)
	for i := range ks {
		ks[i] = d.key()
	}
	return ks
}

func (d *fuzzDecoder) key() int {
	if b := d.byte(); b != 0xff {
		return int(b) % fuzzKeys
	}
	return undefKey
}

func (d *fuzzDecoder) blocks(max int) []int {
	n := int(d.byte()) % (max + 1)
	ks := make([]int, n)
	for i := range ks {
		switch b := d.byte(); b {
		case 0xff:
			ks[i] = nilBlock
		case 0xfe:
			ks[i] = undefBlck
		default:
			ks[i] = int(b) % fuzzKeys
		}
	}
	return ks
}
