package notifier_test

import (
	"context"
	"slices"
	"testing/synctest"
)

// The release of stalled blockstore calls in FuzzNotifierModel's stall mode
// (stall_fuzz_test.go): which operations go on, wait or start over, as the
// model predicts.

// releaseUnreserved releases, to pass, the parked calls that reserve nothing
// and whose keys op, which will park or wait, needs: released later, such a
// call would start over and wait for op's reservation or mark, and the
// driver allows one waiter at a time. So no reservation or mark of a parked
// or waiting operation ever covers the key of a parked call that reserves
// nothing.
//
// Likewise for a parked Subscribe that left keys its subscription wanted
// unreserved (held), when op needs one of its keys: if the want of a held
// key ends, by a call that does not wait, the Subscribe starts over once
// released, and its second attempt needs its keys again; it would wait for
// op's reservation or mark, or, waking op as it releases its own keys, come
// after it.
func (h *fuzzHarness) releaseUnreserved(op *fuzzOp) {
	keys := op.waitFor(h.m)
	needs := func(ks []int) bool {
		return slices.ContainsFunc(ks, func(k int) bool { return slices.Contains(keys, k) })
	}
	for i := 0; i < len(h.stalled); i++ {
		st := h.stalled[i]
		switch {
		case st.resv == nil && needs(st.waitFor(h.m)):
			h.logf("%s needs the key of %s, which reserves nothing: release it first", op.desc, st.desc)
		case st.resv != nil && len(st.held) > 0 && (needs(st.resv) || needs(st.held)):
			h.logf("%s needs a key of %s, which may start over: release it first", op.desc, st.desc)
		default:
			continue
		}
		h.release(i, ioPass)
		i = -1
	}
}

// parksHoldingMarked reports whether op, a Subscribe, would park leaving
// unreserved (held) a key that the waiting operation needs. Should the want
// of that key end while both are there (by the release of a Publish of it),
// the Subscribe, once released, would start over and wait behind the
// waiter's mark; the model cannot say when that wait ends. The driver
// settles first (launch).
func (h *fuzzHarness) parksHoldingMarked(op *fuzzOp) bool {
	if h.waiter == nil || op.parkResv == nil || h.returns(op, h.m, h.stalled) || h.waits(op, h.m, h.stalled) {
		return false
	}
	_, held := op.parkResv(h.m)
	return slices.ContainsFunc(held, func(k int) bool { return slices.Contains(h.waiterKeys, k) })
}

// startsOverBehind returns the index in stalled of a parked call that may
// start over, other than stalled[i], whose keys the waiting operation needs
// once stalled[i] is released, ending as o, if it then waits or parks; or
// -1: a Subscribe with held keys, or a call that reserves nothing. That is
// releaseUnreserved's rule for a waiter that goes on: the waiter may need
// keys it did not (the wants of its subscription changed), or may not have
// marked them (it marks only the least key it finds busy), and would wait or park
// on one that the call, starting over once released, needs too.
func (h *fuzzHarness) startsOverBehind(i int, o ioOutcome) int {
	w := h.waiter
	if w == nil {
		return -1
	}
	c := h.m.clone()
	_ = h.stalled[i].commit(c, o, true)
	rest := slices.Delete(slices.Clone(h.stalled), i, i+1)
	if _, early := w.early(c); early || !waiterWaits(w, c, rest) && (w.point == nil || !w.io(c)) {
		return -1
	}
	keys := w.waitFor(c)
	needs := func(ks []int) bool {
		return slices.ContainsFunc(ks, func(k int) bool { return slices.Contains(keys, k) })
	}
	for j, st := range h.stalled {
		switch {
		case j == i:
		case st.resv == nil && needs(st.waitFor(c)), // reserves nothing (releaseUnreserved)
			st.resv != nil && len(st.held) > 0 && (needs(st.resv) || needs(st.held)):
			return j
		}
	}
	return -1
}

// releaseOp is the input's Release.
func (h *fuzzHarness) releaseOp(slot byte, o ioOutcome) {
	n := len(h.stalled)
	if h.waiter != nil && h.waiter.ctxWait {
		n++
	}
	if n == 0 {
		h.logf("release: nothing parked")
		return
	}
	if i := int(slot) % n; i < len(h.stalled) {
		h.release(i, o)
		return
	}
	h.cancelWaiter("the input says so")
}

// cancelWaiter cancels the context of the waiter, a Publish or Subscribe,
// which returns having done nothing.
func (h *fuzzHarness) cancelWaiter(why string) {
	w := h.waiter
	if w == nil || !w.ctxWait {
		h.failf("harness: no waiter to cancel (%s)", why)
	}
	h.waiter, w.want = nil, context.Canceled
	if w.onCancel != nil {
		w.onCancel(h.m)
	}
	h.logf("cancel the context of %s: %s", w.desc, why)
	h.settleOn(w)
	w.cancel()
	synctest.Wait()
	h.verify(w, opReturns)
}

// release lets the parked call stalled[i] go on, ending as o, and with it the
// waiter if nothing else holds it up.
func (h *fuzzHarness) release(i int, o ioOutcome) {
	h.t.Helper()
	op, w := h.stalled[i], h.waiter
	if op.resv == nil {
		h.releaseUnreserved1(i, o)
		return
	}
	if j := h.startsOverBehind(i, o); j >= 0 {
		h.logf("%s would need a key of %s, which may start over: release it first", w.desc, h.stalled[j].desc)
		h.release(j, ioPass)
		h.release(slices.Index(h.stalled, op), o)
		return
	}
	rest := slices.Delete(slices.Clone(h.stalled), i, i+1)
	try := func(c *model) bool { return h.releaseOverflows(c, op, w, rest, o) }
	if !h.avoidOverflow(try) {
		h.cancelWaiter("its delivery would race a drain goroutine that the release starts")
		w = nil
		if !h.avoidOverflow(try) {
			h.failf("harness: a slow consumer end would still race a reservation")
		}
	}
	h.stalled = rest
	h.logf("release stalled[%d] %s: %v", i, op.desc, o)
	h.m.busy = reservedKeys(rest)
	pend := h.pendingSubs()
	h.commitReleased(op, o)
	h.logPending(pend)
	wState := opWaits
	if w != nil {
		h.waiter = nil
		wState = h.expect(w)
		h.settleOn(w)
	}
	op.point.free(o)
	synctest.Wait()
	h.verify(op, opReturns)
	if w != nil {
		h.verify(w, wState)
	}
}

// releaseOverflows is release's test, for avoidOverflow, of whether the
// release of op (ending as o, rest staying parked), applied to c, would let
// a slow consumer end race a reservation or a drain goroutine that op
// starts: as the waiter w (nil if none) waits on, or goes on.
func (h *fuzzHarness) releaseOverflows(c *model, op, w *fuzzOp, rest []*fuzzOp, o ioOutcome) bool {
	c.busy = reservedKeys(rest)
	_ = op.commit(c, o, true)
	if w == nil {
		return false // an end left pending is modelled (model.deliver)
	}
	if waiterWaits(w, c, rest) {
		return h.overflowsHeld(c, rest, true)
	}
	if len(c.slowEnds) > 0 { // op's end of them would race w
		return true
	}
	if w.point != nil && w.io(c) {
		return overflowsReserved(c, append(rest, w))
	}
	tight := c.clone()
	tight.tight = true
	_ = w.commit(c, ioPass, false)
	_ = w.commit(tight, ioPass, false)
	// Unless they agree, whether w pushes a subscription past
	// WithMaxPending depends on the drain goroutine that op started.
	return overflowsReserved(c, rest) || len(c.slowEnds) != len(tight.slowEnds)
}

// commitReleased commits op, released to end as o, to the model, with the
// closes parked on it.
func (h *fuzzHarness) commitReleased(op *fuzzOp, o ioOutcome) {
	// A released Subscribe gets to its commit, and may start over, unless
	// its Get fails (and is not taken for a miss) or its context ends.
	if (o == ioPass || h.m.checkMiss && o != ioCancel) && op.startsOver != nil && op.startsOver(h.m) {
		// The closes parked on its first attempt go on before the second
		// (review: one ended the last want of a key that the second
		// attempt wanted again, and the model, committing the Subscribe
		// whole, said the want never ended).
		h.logf("%s starts over, a key it held no longer wanted", op.desc)
		h.m.settlePending()
	}
	op.want = op.commit(h.m, o, true)
	h.m.settlePending() // op resumes the closes parked on it as it ends (putOp)
}

// releaseUnreserved1 releases stalled[i], a call that reserves nothing
// (unreserved), and so wakes no waiter, unless it ends the waiter's
// subscription (a block it finds pushes that past WithMaxPending): the
// waiter then returns, and resumes the ends left pending with it (wakeEnded;
// found by review). If its key was touched while it was
// parked (by an operation on it, or, a false alarm that the model cannot
// predict, on another key of its version bucket and shard), it starts over on
// the general path, from the top (a subscription ended meanwhile makes it
// fail as ended), and its second Get ends as the store does now: either
// ending is right, and the model takes the one the call returns.
func (h *fuzzHarness) releaseUnreserved1(i int, o ioOutcome) {
	h.t.Helper()
	op := h.stalled[i]
	rest := slices.Delete(slices.Clone(h.stalled), i, i+1)
	try := func(c *model) bool { return h.unreservedOverflows(c, op, rest, o) }
	if !h.avoidOverflow(try) {
		h.failf("harness: a slow consumer end would still race a reservation")
	}
	h.stalled = rest
	h.logf("release stalled[%d] %s: %v", i, op.desc, o)
	h.m.busy = reservedKeys(rest)
	pend := h.pendingSubs()
	alt := h.m.clone()
	altWant := op.commit(alt, ioPass, false) // started over: from the top, with the store as it is now
	op.want = op.commit(h.m, o, true)
	alt.settlePending()
	h.m.settlePending()
	op.point.free(o)
	synctest.Wait()
	h.takeStartOver(op, alt, altWant)
	h.logPending(pend)
	h.verify(op, opReturns)
	h.wakeEnded()
}

// unreservedOverflows is releaseUnreserved1's test, for avoidOverflow, of
// whether the release of op (ending as o, or started over and passing;
// rest staying parked), applied to c, would let a slow consumer end race a
// reservation of the waiter.
func (h *fuzzHarness) unreservedOverflows(c *model, op *fuzzOp, rest []*fuzzOp, o ioOutcome) bool {
	if h.waiter == nil {
		return false // an end left pending is modelled (model.deliver)
	}
	c.busy = reservedKeys(rest)
	alt := c.clone()
	_ = op.commit(c, o, true)
	_ = op.commit(alt, ioPass, false)
	// It wakes no waiter (it reserves nothing), so the waiter's mark
	// still holds up a slow consumer end.
	return h.overflowsHeld(c, rest, true) || h.overflowsHeld(alt, rest, true)
}

// takeStartOver, once op (released, reserving nothing) has returned, takes
// the model alt, in which op started over from the top, and its ending
// altWant, if what op returned says so. If op has not returned, it does
// nothing.
func (h *fuzzHarness) takeStartOver(op *fuzzOp, alt *model, altWant error) {
	select {
	case err := <-op.done:
		op.done <- err
		// Both endings may have the same error (Fetch: a block returned
		// or a request made; with WithFailedCheckAsMiss, a failed Get
		// taken for a miss or a second Get that passed): then what else
		// it returned, and what WithFailedCheckAsMiss's function got,
		// decide.
		agrees := func(m *model) bool { return (op.agrees == nil || op.agrees(m)) && h.takenAgrees(m) }
		if sameErr(err, altWant) && (!sameErr(err, op.want) || !agrees(h.m) && agrees(alt)) {
			h.logf("%s: its key was touched meanwhile, so it started over and checked again", op.desc)
			h.m, op.want = alt, altWant
		}
	default:
	}
}
