package notifier_test

import (
	"context"
	"fmt"
	"slices"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// The operations of FuzzNotifierModel's harness (fuzz_test.go), each run on
// the Notifier and on the model side by side.

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
		want.fs = fs
		h.syncSubs()
	}
}

func (h *fuzzHarness) newRequest() {
	fs := &fuzzSub{}
	_, werr := h.m.newRequest(fs)
	var err error
	fs.s, err = h.n.NewRequest(func(msg notifier.ResponseMessage) { h.onMessage(fs, msg) })
	h.checkErr("NewRequest", err, werr)
	h.syncSubs()
}

// syncSubs appends to h.subs the real sides of the subscriptions that the
// model has made since, in its order: a Fetch makes its request in the
// model when it takes effect, which in stall mode is when it is released.
func (h *fuzzHarness) syncSubs() {
	h.t.Helper()
	for i := len(h.subs); i < len(h.m.subs); i++ {
		fs := h.m.subs[i].fs
		if fs == nil || fs.s == nil {
			h.failf("harness: sub[%d] has no real subscription", i)
		}
		h.subs = append(h.subs, fs)
	}
}

// fetch runs Fetch(k), as an operation that may stall in its Get or wait
// for a reservation, as Subscribe does. The request it makes, if it makes
// one, joins h.subs once the model's does (syncSubs), as a func
// subscription: its delivery function, from newFunc, records messages as
// theirs do. newFunc counts its calls, compared with the model's after every
// step, and calls Wanted, which takes k's shard lock: newFunc must run
// holding no lock of the Notifier.
//
// Fetch takes two paths (model.fetchCommit), and which one it takes decides
// what it returns: the fast path, when it finds k alone (nobody wants,
// reserves or waits for it), and the general one, NewRequest and Subscribe.
// A call that waited takes the general path; so does one parked on the fast
// path whose key an operation touched meanwhile, which then runs again from
// the top (releaseUnreserved1, agrees).
func (h *fuzzHarness) fetch(k int, cancelled bool) {
	fs := &fuzzSub{}
	c := fuzzCids([]int{k})[0]
	// What Fetch returned, and newFunc's calls: written on the operation's
	// goroutine, read once it has returned (op.done).
	var (
		blk   blocks.Block
		calls int
	)
	op := &fuzzOp{
		desc:    fmt.Sprintf("Fetch(%s, cancelled=%v)", keyNames([]int{k}), cancelled),
		ctxWait: true,
		request: true,
		resv:    []int{k},
		early:   func(m *model) (error, bool) { return m.subscribeEarly([]int{k}, cancelled) }, // Fetch checks what a Subscribe of k does
		waitFor: func(*model) []int { return []int{k} },
		io:      func(m *model) bool { return m.bs },
		unreserved: func(m *model) bool {
			return m.bs && !m.wanted(k) // shardIndex.alone; peek needs a blockstore
		},
	}
	op.run = func(ctx context.Context) error {
		b, s, err := h.n.Fetch(ctx, c, func() func(notifier.ResponseMessage) {
			calls++
			h.n.Wanted(c) // takes k's shard lock: deadlocks if Fetch holds it
			return func(msg notifier.ResponseMessage) { h.onMessage(fs, msg) }
		})
		blk, fs.s = b, s
		return err
	}
	// called: the newFunc calls each model that took this Fetch into account
	// counts for it (releaseUnreserved1 commits it to two).
	called := make(map[*model]int)
	op.commit = func(m *model, o ioOutcome, afterStall bool) error {
		// The fast path: not after a wait, and either released from a park
		// on the fast path (expect emptied resv) or not parked at all; a
		// call parked there and run again from the top (afterStall false)
		// takes the general path.
		fast := !op.waited && (op.resv == nil) == afterStall
		before := m.newFuncs
		err := m.fetchCommit(k, o, fast, fs)
		called[m] = m.newFuncs - before
		return err
	}
	made := func(m *model) bool { return slices.ContainsFunc(m.subs, func(s *mSub) bool { return s.fs == fs }) }
	// Two endings with the same error differ in the request made, or, when
	// both fail, in whether newFunc was called: the general path calls it
	// before its Get, the fast path only after a miss.
	op.agrees = func(m *model) bool { return made(m) == (fs.s != nil) && called[m] == calls }
	op.onCancel = func(m *model) { m.newFuncs++ } // it made its request before it waited
	op.after = func(err error) {
		h.t.Helper()
		h.newFuncs += calls
		h.mu.Lock()
		got := len(fs.got)
		h.mu.Unlock()
		switch {
		case err != nil && (blk != nil || fs.s != nil):
			h.failf("%s returned block %v and request %v with its error", op.desc, blk != nil, fs.s != nil)
		case err == nil && (blk == nil) == (fs.s == nil):
			h.failf("%s returned block %v and request %v: want one of them", op.desc, blk != nil, fs.s != nil)
		case fs.s != nil && !made(h.m):
			h.failf("%s returned a request; the model says it makes none", op.desc)
		case fs.s == nil && made(h.m):
			h.failf("%s returned no request; the model says it makes one", op.desc)
		case blk != nil && (blk.Cid() != c || !slices.Equal(blk.RawData(), fuzzBlocks[k].RawData())):
			h.failf("%s returned the wrong block %s", op.desc, blk.Cid())
		case fs.s == nil && got > 0:
			h.failf("%s returned no request, but its delivery function got %d messages", op.desc, got)
		case blk != nil:
			h.logf("%s: returned the block", op.desc)
		case fs.s != nil:
			h.logf("%s: returned request sub[%d]", op.desc, slices.IndexFunc(h.m.subs, func(s *mSub) bool { return s.fs == fs }))
		}
	}
	h.launch(op, cancelled)
}

func (h *fuzzHarness) subscribe(i int, keys []int, cancelled bool) {
	op := &fuzzOp{
		desc:    fmt.Sprintf("sub[%d].Subscribe(%s, cancelled=%v)", i, keyNames(keys), cancelled),
		run:     func(ctx context.Context) error { return h.subs[i].s.Subscribe(ctx, fuzzCids(keys)...) },
		ctxWait: true,
		early: func(m *model) (error, bool) {
			if err, early := m.subscribeEarly(keys, false); early {
				return err, true
			}
			// An ended subscription's Subscribe waits for nothing: it
			// returns its end, before it looks at ctx (Subscribe), and
			// so does one waiting as the subscription ends
			// (Subscription.addSleeper, fuzzHarness.wakeEnded).
			if ms := m.subs[i]; ms.ended {
				return ms.endedErr(), true
			}
			if cancelled {
				return context.Canceled, true
			}
			return nil, false
		},
		// Only the keys its subscription does not want yet: it changes
		// nothing for the others (G11).
		waitFor: func(m *model) []int { return m.subs[i].added(keys) },
		io:      func(m *model) bool { return m.subscribeIO(m.subs[i], keys) },
		resv:    keys,
		unreserved: func(m *model) bool {
			return m.bs && len(keys) == 1 && !m.wanted(keys[0]) // subscribeOne; the harness makes no interest subscription
		},
		parkResv: func(m *model) (resv, held []int) {
			return m.subs[i].added(keys), m.subs[i].filter(keys)
		},
	}
	op.startsOver = func(m *model) bool {
		return slices.ContainsFunc(op.held, func(k int) bool { return !m.subs[i].wants[k] })
	}
	op.commit = func(m *model, o ioOutcome, afterStall bool) error {
		if afterStall && m.checkMiss && o != ioCancel && op.startsOver(m) {
			// Its first attempt took the failure of its stalled Get for
			// a miss and went on to its commit, which started over: the
			// Gets of the second attempt are not stalled.
			o = ioPass
		}
		return m.subscribeCommit(m.subs[i], keys, o, afterStall)
	}
	h.launch(op, cancelled)
}

func (h *fuzzHarness) unsubscribe(i int, keys []int) {
	h.launch(&fuzzOp{
		desc: fmt.Sprintf("sub[%d].Unsubscribe(%s)", i, keyNames(keys)),
		run: func(context.Context) error {
			h.subs[i].s.Unsubscribe(fuzzCids(keys)...)
			return nil
		},
		early: func(*model) (error, bool) { return nil, len(keys) == 0 },
		// Only the keys it wants: a key it does not want holds it up for no
		// blockstore call (G11).
		waitFor: func(m *model) []int { return m.subs[i].filter(keys) },
		commit: func(m *model, _ ioOutcome, _ bool) error {
			m.unsubscribe(m.subs[i], keys)
			return nil
		},
	}, false)
}

func (h *fuzzHarness) remove(i int) {
	h.launch(&fuzzOp{
		desc: fmt.Sprintf("sub[%d].Remove()", i),
		run: func(context.Context) error {
			h.subs[i].s.Remove()
			return nil
		},
		waitFor: func(m *model) []int { return m.subs[i].filter(allKeys()) },
		commit: func(m *model, _ ioOutcome, _ bool) error {
			m.remove(m.subs[i])
			return nil
		},
	}, false)
}

func (h *fuzzHarness) publish(from string, blks, haves, donthaves []int, cancelled bool) {
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
	keys := slices.Concat(blks, haves, donthaves)
	h.launch(&fuzzOp{
		desc: fmt.Sprintf("Publish(from %q, blocks %s, haves %s, donthaves %s, cancelled=%v)",
			from, keyNames(blks), keyNames(haves), keyNames(donthaves), cancelled),
		run:     func(ctx context.Context) error { return h.n.Publish(ctx, msg) },
		ctxWait: true,
		early:   func(m *model) (error, bool) { return m.publishEarly(blks, haves, donthaves, cancelled) },
		waitFor: func(*model) []int { return keys },
		io:      func(m *model) bool { return m.bs && len(m.publishStores(from, blks)) > 0 },
		resv:    keys,
		commit: func(m *model, o ioOutcome, _ bool) error {
			return m.publishCommit(from, blks, haves, donthaves, o)
		},
	}, cancelled)
}

// close releases every stalled call first: which subscriptions Close ends
// before a stalled Publish delivers would depend on map order.
func (h *fuzzHarness) close() {
	h.settle("Close")
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
