package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
// (NewSubscription, Subscribe, Unsubscribe, Remove, local and remote Publish
// with blocks, HAVEs, DONT_HAVEs, duplicates and undefined CIDs, Close,
// blockstore faults switched on and off, reads from Messages(), blocks written
// to and deleted from the blockstore behind the Notifier's back), runs it against a Notifier
// and against the sequential model in model_test.go, and after every step
// compares the errors, the messages each subscription received, the keys
// reported to the cancel function, Stats, Err and the blockstore contents.
//
// Each run happens in a synctest bubble so that the goroutines that drain
// channel backlogs settle after every step: that makes what sits in each
// channel exact and comparable.
//
// The input format is in fuzzDecoder; seeds are in testdata/fuzz.
func FuzzNotifierModel(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
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
	subs  []*fuzzSub            // parallel to m.subs
	steps []string              // what has run, for failure messages

	cancels []int // keys the cancel function received during the current step
}

// fuzzSub is the real side of one model subscription.
type fuzzSub struct {
	s   *notifier.Subscription
	got []fzMsg // func subscription: received during the current step
}

func runFuzzModel(t *testing.T, data []byte) {
	d := &fuzzDecoder{data: data}
	h := newFuzzHarness(t, d)
	for step := 0; step < fuzzMaxSteps && !d.done(); step++ {
		h.step(d)
		h.compare()
	}
	h.close()
	h.compare()
}

func newFuzzHarness(t *testing.T, d *fuzzDecoder) *fuzzHarness {
	c0, c1 := d.byte(), d.byte()
	withBS := c0&7 != 7
	shards := []int{1, 2, 64}[int(c0>>3)%3]
	buf := []int{0, 1, 2, 32}[c1&3]
	maxPending := []int{0, 1, 2}[int(c1>>2)%3]
	h := &fuzzHarness{t: t, m: newModel(withBS, buf, maxPending)}
	opts := []notifier.Option{
		notifier.WithShards(shards),
		notifier.WithBufferSize(buf),
		notifier.WithMaxPending(maxPending),
		notifier.WithCancelFunc(h.onCancel),
	}
	if !withBS {
		h.n = notifier.New(nil, opts...)
	} else {
		h.inner = blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
		h.fbs = faultbs.New(h.inner)
		h.n = notifier.New(h.fbs, opts...)
	}
	h.logf("New(bs=%v, shards=%d, buf=%d, maxPending=%d)", withBS, shards, buf, maxPending)
	return h
}

func (h *fuzzHarness) onCancel(keys []cid.Cid) {
	for i, k := range keys {
		h.cancels = append(h.cancels, fuzzKeyIndex(k))
		keys[i] = cid.Undef // the slice is the callee's: scribbling must harm nobody
	}
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
	fs.got = append(fs.got, h.convert(msg))
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
	switch op := d.byte() % 16; op {
	case 0, 1:
		h.newSubscription(d.byte())
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
	}
}

func (h *fuzzHarness) pick(d *fuzzDecoder) (int, bool) {
	b := d.byte()
	if len(h.subs) == 0 {
		return 0, false
	}
	return int(b) % len(h.subs), true
}

func (h *fuzzHarness) newSubscription(b byte) {
	id, fn := uint64(b&3), b&4 == 0
	want, werr := h.m.newSubscription(id, fn)
	fs := &fuzzSub{}
	var err error
	if fn {
		fs.s, err = h.n.NewSubscriptionFunc(id, func(msg notifier.ResponseMessage) { h.onMessage(fs, msg) })
	} else {
		fs.s, err = h.n.NewSubscription(id)
	}
	h.checkErr(fmt.Sprintf("NewSubscription(id=%d, func=%v)", id, fn), err, werr)
	if want != nil {
		h.subs = append(h.subs, fs)
	}
}

func (h *fuzzHarness) subscribe(i int, keys []int, cancelled bool) {
	werr := h.m.subscribe(h.m.subs[i], keys, cancelled)
	err := h.subs[i].s.Subscribe(fuzzCtx(cancelled), fuzzCids(keys)...)
	h.checkErr(fmt.Sprintf("sub[%d].Subscribe(%s, cancelled=%v)", i, keyNames(keys), cancelled), err, werr)
}

func (h *fuzzHarness) unsubscribe(i int, keys []int) {
	h.m.unsubscribe(h.m.subs[i], keys)
	h.subs[i].s.Unsubscribe(fuzzCids(keys)...)
	h.logf("sub[%d].Unsubscribe(%s)", i, keyNames(keys))
}

func (h *fuzzHarness) remove(i int) {
	h.m.remove(h.m.subs[i])
	h.subs[i].s.Remove()
	h.logf("sub[%d].Remove()", i)
}

func (h *fuzzHarness) publish(from string, blks, haves, donthaves []int, cancelled bool) {
	werr := h.m.publish(from, blks, haves, donthaves, cancelled)
	msg := notifier.ResponseMessage{From: from, Haves: fuzzCids(haves), DontHaves: fuzzCids(donthaves)}
	for _, k := range blks {
		switch k {
		case nilBlock:
			msg.Blocks = append(msg.Blocks, nil)
		case undefBlck:
			b, _ := blocks.NewBlockWithCid([]byte("undef"), cid.Undef)
			msg.Blocks = append(msg.Blocks, b)
		default:
			msg.Blocks = append(msg.Blocks, fuzzBlocks[k])
		}
	}
	err := h.n.Publish(fuzzCtx(cancelled), msg)
	h.checkErr(fmt.Sprintf("Publish(from %q, blocks %s, haves %s, donthaves %s, cancelled=%v)",
		from, keyNames(blks), keyNames(haves), keyNames(donthaves), cancelled), err, werr)
}

func (h *fuzzHarness) close() {
	h.m.close()
	h.checkErr("Close()", h.n.Close(), nil)
}

func (h *fuzzHarness) setFault(m faultbs.Method, on bool) {
	h.logf("blockstore %s failing = %v", m, on)
	if h.fbs == nil {
		return
	}
	mode := faultbs.Pass
	if on {
		mode = faultbs.Fail
	}
	h.fbs.Set(m, mode)
}

// read takes one message from a channel subscription, without blocking.
func (h *fuzzHarness) read(i int) {
	ms, fs := h.m.subs[i], h.subs[i]
	if ms.fn {
		return
	}
	var want *fzMsg
	if len(ms.queue) > 0 {
		want = &ms.queue[0]
		ms.queue = ms.queue[1:]
	}
	select {
	case msg, ok := <-fs.s.Messages():
		switch {
		case !ok && want == nil && ms.ended:
			h.logf("sub[%d] read: closed", i)
		case !ok:
			h.failf("sub[%d]: Messages() closed, model says %v", i, want)
		case want == nil:
			h.failf("sub[%d]: received %v, model says nothing", i, h.convert(msg))
		case !h.convert(msg).equal(*want):
			h.failf("sub[%d]: received %v, model says %v", i, h.convert(msg), *want)
		default:
			h.logf("sub[%d] read: %v", i, *want)
		}
	default:
		if want != nil || ms.ended {
			h.failf("sub[%d]: nothing to receive, model says %v (ended=%v)", i, want, ms.ended)
		}
		h.logf("sub[%d] read: nothing", i)
	}
}

// collect deletes a block from the blockstore, as garbage collection does.
func (h *fuzzHarness) collect(k byte) {
	h.logf("blockstore.DeleteBlock(k%d) behind the Notifier's back", k)
	if h.inner == nil {
		return
	}
	if err := h.inner.DeleteBlock(context.Background(), fuzzBlocks[k].Cid()); err != nil {
		h.failf("blockstore: %v", err)
	}
	h.m.stored[k] = false
}

func (h *fuzzHarness) storeBehindTheBack(k byte) {
	h.logf("blockstore.PutMany(k%d) behind the Notifier's back", k)
	if h.inner == nil {
		return
	}
	if err := h.inner.PutMany(context.Background(), []blocks.Block{fuzzBlocks[k]}); err != nil {
		h.failf("blockstore: %v", err)
	}
	h.m.stored[k] = true
}

// compare checks everything observable against the model once the step's
// goroutines have settled, and starts a new step.
func (h *fuzzHarness) compare() {
	h.t.Helper()
	synctest.Wait()
	slices.Sort(h.cancels)
	slices.Sort(h.m.cancels)
	if !slices.Equal(h.cancels, h.m.cancels) {
		h.failf("cancel function got %v, model says %v", h.cancels, h.m.cancels)
	}
	h.cancels, h.m.cancels = nil, nil
	if got, want := h.n.Stats(), h.m.stats(); got != want {
		h.failf("Stats() = %+v, model says %+v", got, want)
	}
	for i, ms := range h.m.subs {
		h.compareSub(i, ms, h.subs[i])
	}
	for k := range fuzzKeys {
		if h.inner == nil {
			break
		}
		if ok, _ := h.inner.Has(context.Background(), fuzzBlocks[k].Cid()); ok != h.m.stored[k] {
			h.failf("blockstore has k%d = %v, model says %v", k, ok, h.m.stored[k])
		}
	}
}

func (h *fuzzHarness) compareSub(i int, ms *mSub, fs *fuzzSub) {
	h.t.Helper()
	if ms.fn {
		if !slices.EqualFunc(fs.got, ms.got, fzMsg.equal) {
			h.failf("sub[%d] received %v, model says %v", i, fs.got, ms.got)
		}
		fs.got, ms.got = nil, nil
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
//	config: c0 (bits 0-2: 7 = notify only; bits 3-7 mod 3: shards 1, 2, 64),
//	        c1 (bits 0-1: buffer 0, 1, 2, 32; bits 2-7 mod 3: max pending 0, 1, 2)
//	then operations, each an opcode byte mod 16 and its arguments:
//	  0-1   NewSubscription  b: bits 0-1 session ID, bit 2 set = channel, clear = func
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
		if b := d.byte(); b == 0xff {
			ks[i] = undefKey
		} else {
			ks[i] = int(b) % fuzzKeys
		}
	}
	return ks
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
