package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing/synctest"
	"time"
)

// The driver of FuzzNotifierModel's operations that may stall in the
// blockstore (Subscribe, Fetch, Publish) or wait for one that has (those and
// Unsubscribe, Remove). Each runs on its own goroutine. Before it starts, the
// model says what it will do: return, park in the blockstore (it was armed
// and calls the blockstore), or wait for the reservation of a parked call. The
// bubble then settles (synctest.Wait: every goroutine is durably blocked,
// which parking and waiting are, and a lock is not) and the driver checks
// that the operation did just that. A stalled call takes effect, in the
// model, when the input releases it; the operation waiting for it right
// after, in the same step.
//
// A waiting operation keeps one mark (Notifier.markBusy): on the least, by
// the bytes of the CID (fuzzKeyRank), of the keys it must wait for in its
// last round. It sleeps on that key's reservation; once that is released it
// looks again, and goes on, or moves its mark to the least key it finds
// reserved then (fuzzOp.mark, expect). A later operation waits behind the
// mark on that key alone: on the waiter's other keys it goes ahead, and may
// park on one, which the waiter then finds reserved in its next round (G11).
// A pending close keeps one mark likewise (model.pendingBusy).
//
// That keeps every interleaving deterministic, which needs three rules:
//
//   - At most one operation waits: two woken by one release would race. An
//     operation that would be the second releases every parked call first.
//   - Close releases every parked call first: which subscriptions Close ends
//     before a stalled Publish delivers would depend on map order.
//   - A subscription pushed past WithMaxPending while it wants a busy key
//     has its end left pending (Subscription.closeSlow), which the model
//     follows (model.deliver, settlePending): with the holder of the key's
//     reservation while no operation waits, or, while one does, with the
//     waiter, if the waiter's mark alone holds the end up (model.held). (The
//     waiter marks a key it finds reserved and keeps it only while that
//     key's reservation stands, so in this driver, which makes no end
//     pending on a reservation while an operation waits, no end is left
//     pending with the waiter; the model allows for it all the same.) The
//     waiter resumes such an end as it returns (released, cancelled, or as
//     its subscription ends, even by the release of a call that reserves
//     nothing: wakeEnded), or holds it up on with the reservations it takes
//     if it parks (settleOn). In the harness nothing else can make the
//     waiter's mark stop holding (every operation that could would wait
//     behind it), so the model need not follow the hand-over of parked
//     closes (op.letGo). A parked Subscribe that starts over once released
//     (a key it left unreserved is no longer wanted) lets the ends pending
//     on it go on between its two attempts (fuzzOp.startsOver). While an end
//     is pending, an operation that would wait (for a reservation, or behind
//     the close's mark), or park on a key that the pending end's
//     subscription wants, releases every parked call first, so that no
//     later operation holds up the close or waits behind its mark; so a
//     waiter is always older than the pending ends (waiterWaits), and a
//     pending close finds no key busy that it did not find at first: its
//     mark moves only as the key it marks is let go. With an operation
//     waiting, no subscription is pushed past WithMaxPending while it wants
//     a reserved key, or by a release that wakes the waiter: the end would
//     race the waiter, woken by the same release. (The harness checks after
//     every step that each pending end marks a busy key, and has none
//     reserved while an operation waits: checkPendingAlone.) Nor by a
//     waiter that delivers right after the released call, when the outcome
//     depends on whether the drain goroutine that the call started has
//     taken its message yet (found by the fuzzer).
//     The driver reads every channel empty before such a step, or else
//     cancels the waiter.
//
// The model applies an operation whole, at one instant; a parked operation has
// done nothing observable yet (its keys are reserved, the read calls see the
// wants as before it), so after every step the comparison is exact.

// fuzzWatchdog bounds one input in real time; a normal input takes
// milliseconds.
const fuzzWatchdog = 60 * time.Second

// fuzzOp is one operation of the fuzz test that may stall or wait.
type fuzzOp struct {
	desc    string
	run     func(ctx context.Context) error // the real call
	ctxWait bool                            // its wait for a reservation ends with its ctx (Publish, Subscribe, Fetch)
	// request: a Fetch, which on the general path makes its request before
	// it waits for a reservation or calls Get (heldRequests).
	request bool
	// after, if set, checks what else the call returned, once it has
	// returned err and the model has taken it into account.
	after func(err error)
	// agrees, if set, reports whether what the call returned agrees with m,
	// for releaseUnreserved1 to choose between two endings with the same
	// error (Fetch: the block returned, or a request made).
	agrees func(m *model) bool
	// onCancel, if set, is what the call did to the model although it
	// returned its context's error while waiting (cancelWaiter).
	onCancel func(m *model)

	// The model's side, as functions of the state when the operation gets to
	// that point. early: it returns err before it looks at the index. waitFor:
	// the keys whose reservation it waits for. io: it calls the blockstore.
	// resv: the keys it reserves meanwhile. commit: all the rest, its
	// blockstore call ending as o; afterStall: that call was parked.
	early   func(m *model) (err error, early bool)
	waitFor func(m *model) []int
	io      func(m *model) bool
	resv    []int
	commit  func(m *model, o ioOutcome, afterStall bool) error

	// unreserved: if it parks on m, it reserves nothing (resv is then
	// emptied), as a Subscribe of one key that nobody wants does
	// (Subscription.subscribeOne): other operations on its key do not wait
	// for it, and if one touches the key meanwhile, its release starts over
	// on the general path.
	unreserved func(m *model) bool
	waited     bool // it waited for a reservation: then it took the general path

	// parkResv, if set, is what it reserves if it parks on m (resv), and
	// the keys it leaves unreserved for its commit to look at again (held):
	// a Subscribe reserves only the keys its subscription does not want yet
	// (commitSubscribe), and starts over if the want of a held key ends.
	parkResv func(m *model) (resv, held []int)
	held     []int
	// startsOver, if set, reports whether its commit on m, after it parked,
	// finds a held key no longer wanted, so that it starts over
	// (subscribeAll): its first attempt ends (putOp) before the second
	// begins, and the closes parked on it go on in between.
	startsOver func(m *model) bool

	// mark, if marked, is the one key it marks while it waits: the least
	// (leastKey) of the keys it found reserved in its last round
	// (Notifier.markBusy, busyKey). It sleeps on that key's reservation, and
	// looks again, moving its mark to the least key it then finds reserved,
	// only once that is released (expect). The mark holds while the op
	// still needs its key (op.holds; fuzzHarness.marked).
	mark   int
	marked bool

	point  *stallPoint     // armed: its first blockstore call parks here
	ctx    context.Context //nolint:containedctx // the context of the call, which the driver may cancel
	cancel context.CancelFunc
	done   chan error // receives what run returns
	want   error      // what the model says it returns
}

type opState uint8

const (
	opReturns opState = iota
	opWaits           // for a reservation of a parked call
	opParks           // in the blockstore, holding reservations
)

func (h *fuzzHarness) noEarly(*model) (error, bool) { return nil, false }

// launch starts op on its own goroutine and checks that it returns, parks or
// waits as the model says.
func (h *fuzzHarness) launch(op *fuzzOp, cancelled bool) {
	h.t.Helper()
	if op.early == nil {
		op.early = h.noEarly
	}
	if op.io == nil {
		op.io = func(*model) bool { return false }
	}
	if h.waiter != nil && h.waits(op, h.m, h.stalled) {
		h.settle("a second operation would wait")
	}
	if h.m.hasPending() && (h.waits(op, h.m, h.stalled) || h.parksOnPendingWant(op)) {
		h.settle("an operation would wait, or park on a key a pending end needs")
	}
	if h.armed && op.ctxWait {
		h.armed = false
		op.point, op.ctx = newStallPoint(context.Background())
		op.cancel = op.point.cancel
	} else {
		op.ctx, op.cancel = context.WithCancel(context.Background())
	}
	if cancelled {
		op.cancel()
	}
	if !h.returns(op, h.m, h.stalled) {
		h.releaseUnreserved(op)
		// A release may have begun a pending end, or changed the wants
		// that say what op waits for (found by the fuzzer: the op then
		// waited with an end pending on a reservation).
		if h.waiter != nil && h.waits(op, h.m, h.stalled) || h.m.hasPending() && (h.waits(op, h.m, h.stalled) || h.parksOnPendingWant(op)) {
			h.settle("after a release, an operation would wait, or park on a key a pending end needs")
		}
	}
	if h.parksHoldingMarked(op) {
		h.settle("a Subscribe would park leaving unreserved a key the waiter marks")
	}
	if h.waiter != nil && h.returns(op, h.m, h.stalled) {
		try := func(c *model) bool {
			c.busy = reservedKeys(h.stalled)
			_ = op.commit(c, ioPass, false)
			// An end held up only by the waiter's mark is left pending
			// with it, and resumed as it ends (model.held).
			return overflowsReserved(c, h.stalled)
		}
		if !h.avoidOverflow(try) {
			h.failf("harness: a slow consumer end would still race a reservation")
		}
	}
	state := h.expect(op)
	op.done = make(chan error, 1)
	go func() { op.done <- op.run(op.ctx) }()
	synctest.Wait()
	h.verify(op, state)
	h.wakeEnded()
}

// wakeEnded checks that the waiting operation, if op ended its subscription,
// has returned that end: a waiting Subscribe wakes as its subscription ends
// (Subscription.addSleeper), its wait over.
func (h *fuzzHarness) wakeEnded() {
	w := h.waiter
	if w == nil {
		return
	}
	if err, early := w.early(h.m); early {
		h.waiter, w.want = nil, err
		h.logf("%s: its subscription ended, so it returns", w.desc)
		h.settleOn(w)
		h.verify(w, opReturns)
	}
}

// waiterHolds is model.held: whether the waiting operation holds k on m
// with its mark (marked).
func (h *fuzzHarness) waiterHolds(m *model, k int) bool {
	w := h.waiter
	return w != nil && w.marked && w.mark == k && slices.Contains(w.waitFor(m), k)
}

// settleOn ends the pending ends that w, the waiter until now, held up with
// its mark and no longer holds up: w has returned, and resumed the closes
// parked on it (putOp), or it waits again, perhaps marking another key, or
// parks in the blockstore reserving the key it marked. The caller has
// cleared or reset h.waiter.
func (h *fuzzHarness) settleOn(w *fuzzOp) {
	pend := h.pendingSubs()
	h.m.busy = reservedKeys(h.stalled)
	h.m.settlePending()
	if !slices.Equal(pend, h.pendingSubs()) {
		h.logf("%s lets go of the closes parked on it", w.desc)
		h.logPending(pend)
	}
}

// waits reports whether op, started on m with stalled parked, would wait:
// for a reservation, behind the mark of the waiting operation (h.waiter),
// which is older than op (fuzzHarness.marked), or behind the mark of a
// pending end (model.pendingMarked), which is older too.
func (h *fuzzHarness) waits(op *fuzzOp, m *model, stalled []*fuzzOp) bool {
	if _, early := op.early(m); early {
		return false
	}
	keys := op.waitFor(m)
	if reservedBy(stalled, keys) {
		return true
	}
	return !passesMarks(op, m) && (h.marked(op, keys) || m.pendingMarked(keys))
}

// passesMarks reports whether op, started on m, takes the path that
// reserves nothing (a Subscribe of one key or a Fetch: Notifier.peek): its
// key is reserved by no operation (the caller has checked that) and wanted
// by no subscription of its kind. Then it waits for no mark: a waiter's
// mark keeps the key for the waiter against operations that reserve it,
// and this one reserves nothing (shardIndex.alone).
func passesMarks(op *fuzzOp, m *model) bool {
	return op.unreserved != nil && op.unreserved(m)
}

// parksOnPendingWant reports whether op, launched now, would park in the
// blockstore needing a key that a subscription whose end is pending wants.
// Its reservation would hold that end up once more, at the close's next
// attempt, which comes when the operation it is parked on ends, and which
// operation that is depends on map order (Subscription.lockAllOrPark): the
// driver settles first (launch), so that a pending close finds no key busy
// that it did not find at first (model.pendingMarks).
func (h *fuzzHarness) parksOnPendingWant(op *fuzzOp) bool {
	armed := op.point != nil || h.armed && op.ctxWait // launch arms op before its second look (review)
	if _, early := op.early(h.m); early || !armed || !op.io(h.m) {
		return false
	}
	return h.m.pendingWants(op.waitFor(h.m))
}

// waiterWaits reports whether w, the waiter, still waits on c with rest
// parked: for a reservation, and for nothing else. It is older than every
// pending end (launch settles before an operation would wait while one is
// pending), so it does not wait behind their marks, which waits counts: an
// end pending on w's mark may mark that key too, and waits said that
// w waited when it would go on (review).
func waiterWaits(w *fuzzOp, c *model, rest []*fuzzOp) bool {
	_, early := w.early(c)
	return !early && reservedBy(rest, w.waitFor(c))
}

// marked reports whether one of keys, which op needs, is marked by the
// waiting operation, if that is not op itself, with a mark that holds: on a
// key the waiter still needs (op.holds). The waiter marks one key, the one
// it sleeps for (Notifier.markBusy), so it holds up nobody on the others,
// even those it found busy in an earlier round (G11).
func (h *fuzzHarness) marked(op *fuzzOp, keys []int) bool {
	w := h.waiter
	if w == nil || w == op || !w.marked {
		return false
	}
	return slices.Contains(keys, w.mark) && slices.Contains(w.waitFor(h.m), w.mark)
}

// busyKeys returns the keys of keys that stalled reserve.
func busyKeys(stalled []*fuzzOp, keys []int) []int {
	var busy []int
	for _, k := range keys {
		if k >= 0 && reservedBy(stalled, []int{k}) {
			busy = append(busy, k)
		}
	}
	return busy
}

// returns reports whether op, started on m with stalled parked, would take
// effect and return.
func (h *fuzzHarness) returns(op *fuzzOp, m *model, stalled []*fuzzOp) bool {
	if _, early := op.early(m); early {
		return false
	}
	keys := op.waitFor(m)
	if reservedBy(stalled, keys) {
		return false
	}
	if !passesMarks(op, m) && (h.marked(op, keys) || m.pendingMarked(keys)) {
		return false
	}
	return op.point == nil || !op.io(m)
}

// reservedKeys returns the keys that stalled reserve (model.busy).
func reservedKeys(stalled []*fuzzOp) []int {
	var keys []int
	for _, op := range stalled {
		keys = append(keys, op.resv...)
	}
	return keys
}

func reservedBy(stalled []*fuzzOp, keys []int) bool {
	for _, op := range stalled {
		for _, k := range keys {
			if k >= 0 && slices.Contains(op.resv, k) {
				return true
			}
		}
	}
	return false
}

// overflowsReserved reports whether an operation just run on c ended a slow
// consumer that wants a key reserved by stalled.
func overflowsReserved(c *model, stalled []*fuzzOp) bool {
	return slices.ContainsFunc(c.slowEnds, func(keys []int) bool { return reservedBy(stalled, keys) })
}

// overflowsHeld is overflowsReserved that also counts the keys that the
// waiting operation needs, if one still waits (waiting): it marks one of
// them, which that end's close finds busy too, as it is older
// (Subscription.lockAllOrPark, Notifier.markBusy), so the end would be left
// pending with it; and which one it marks as the release wakes it (or
// marked before) depends on when it runs.
func (h *fuzzHarness) overflowsHeld(c *model, stalled []*fuzzOp, waiting bool) bool {
	return overflowsReserved(c, stalled) || waiting && h.waiter != nil &&
		slices.ContainsFunc(c.slowEnds, func(keys []int) bool {
			return slices.ContainsFunc(keys, func(k int) bool { return slices.Contains(h.waiterKeys, k) })
		})
}

// expect runs op on the model as far as it gets now, and says how far that is.
func (h *fuzzHarness) expect(op *fuzzOp) opState {
	if err, early := op.early(h.m); early {
		op.want = err
		return opReturns
	}
	if keys := op.waitFor(h.m); reservedBy(h.stalled, keys) {
		h.waiter, h.waiterKeys = op, keys
		// It marks the least key it must wait for, and sleeps on that
		// key's reservation (Notifier.markBusy). A waiter re-run after a
		// release whose marked key is still reserved was not woken (the
		// release was another call's): its mark stays. Else it looks again
		// and moves its mark to the least key it finds reserved now.
		if busy := busyKeys(h.stalled, keys); !op.marked || !slices.Contains(busy, op.mark) {
			op.mark, op.marked = leastKey(busy), true
		}
		op.waited = true
		return opWaits
	}
	op.marked = false // it goes on, and drops its mark
	if op.point != nil && op.io(h.m) {
		if op.parkResv != nil {
			op.resv, op.held = op.parkResv(h.m)
		}
		if op.unreserved != nil && !op.waited && op.unreserved(h.m) {
			op.resv = nil
		}
		h.stalled = append(h.stalled, op)
		return opParks
	}
	h.m.busy = reservedKeys(h.stalled)
	pend := h.pendingSubs()
	op.want = op.commit(h.m, ioPass, false)
	h.logPending(pend)
	return opReturns
}

// pendingSubs returns the indices of the subscriptions whose end is
// pending.
func (h *fuzzHarness) pendingSubs() []int {
	var pend []int
	for i, s := range h.m.subs {
		if s.pending {
			pend = append(pend, i)
		}
	}
	return pend
}

// logPending logs the pending ends that began, and those that completed,
// since pendingSubs returned before.
func (h *fuzzHarness) logPending(before []int) {
	for i, s := range h.m.subs {
		switch {
		case s.pending && !slices.Contains(before, i):
			h.logf("sub[%d]: past WithMaxPending with keys %v busy: its end is pending, marking k%d", i, h.m.pendingBusy(s), s.mark)
		case !s.pending && slices.Contains(before, i):
			h.logf("sub[%d]: its pending end completes", i)
		}
	}
}

// checkPendingAlone checks the rule that lets the model follow pending
// ends (see the top of this file): after every step, every pending end is
// held up by a parked call's reservation, the waiter's mark or an older
// pending end's mark (model.pendingBusy), and while an operation waits, by
// no reservation.
func (h *fuzzHarness) checkPendingAlone() {
	h.t.Helper()
	if !h.m.hasPending() {
		return
	}
	busy := h.m.busy
	h.m.busy = reservedKeys(h.stalled)
	defer func() { h.m.busy = busy }()
	for _, i := range h.pendingSubs() {
		busy := h.m.pendingBusy(h.m.subs[i])
		if len(busy) == 0 {
			h.failf("harness: the end of sub[%d] is pending with none of its keys busy", i)
		}
		if !slices.Contains(busy, h.m.subs[i].mark) {
			h.failf("harness: the end of sub[%d] is pending marking k%d, which is not busy (%v)", i, h.m.subs[i].mark, busy)
		}
		if h.waiter != nil && reservedBy(h.stalled, busy) {
			h.failf("harness: %s waits while the end of sub[%d] is pending with a reserved key of %v", h.waiter.desc, i, busy)
		}
	}
}

// verify checks, the bubble settled, that op is where expect said.
func (h *fuzzHarness) verify(op *fuzzOp, state opState) {
	h.t.Helper()
	var err error
	returned := false
	select {
	case err = <-op.done:
		returned = true
	default:
	}
	switch {
	case state == opReturns && !returned:
		h.failf("%s has not returned; the model says nothing holds it up (G11: only operations on reserved keys wait)", op.desc)
	case state == opReturns:
		h.checkErr(op.desc, err, op.want)
		if op.after != nil {
			op.after(err)
		}
	case returned:
		h.failf("%s returned %v; the model says it %s", op.desc, err, [...]string{"", "waits for a reservation", "parks in the blockstore"}[state])
	case state == opWaits && op.point != nil && op.point.parked():
		h.failf("%s called the blockstore; the model says it waits for a reservation", op.desc)
	case state == opWaits:
		h.logf("%s: waits for a reservation, marking k%d", op.desc, op.mark)
	case !op.point.parked():
		h.failf("%s has not called the blockstore; the model says it parks there", op.desc)
	default:
		h.logf("%s: parked in the blockstore as stalled[%d]", op.desc, len(h.stalled)-1)
	}
}

// sameErr reports whether got is what the model's want says: nil for nil,
// else an error that wraps want.
func sameErr(got, want error) bool {
	return want == nil && got == nil || want != nil && errors.Is(got, want)
}

// settle releases every parked call, oldest first, to pass.
func (h *fuzzHarness) settle(why string) {
	if len(h.stalled) > 0 {
		h.logf("%s: release every parked call", why)
	}
	for len(h.stalled) > 0 {
		h.release(0, ioPass)
	}
	if h.waiter != nil {
		h.failf("harness: %s still waits, with nothing reserved", h.waiter.desc)
	}
	if pend := h.pendingSubs(); len(pend) > 0 {
		h.failf("harness: the ends of %v are still pending, with nothing reserved", pend)
	}
}

// avoidOverflow reads every channel subscription empty if try, run on a copy
// of the model, says that the step would push a subscription past
// WithMaxPending where that is not deterministic (see the top of this file).
// It reports whether that settled it.
func (h *fuzzHarness) avoidOverflow(try func(c *model) bool) bool {
	if !try(h.m.clone()) {
		return true
	}
	h.logf("drain every channel first, lest a slow consumer end race a reservation")
	for i, ms := range h.m.subs {
		for !ms.fn && len(ms.queue) > 0 {
			synctest.Wait()
			h.read(i)
		}
	}
	synctest.Wait()
	return !try(h.m.clone())
}

// heldRequests counts the Fetch calls parked or waiting on the general path:
// each has made its request (NewRequest) before it waited or called Get, and
// Stats counts the request from then on, although the model's Fetch has not
// taken effect. (The request wants nothing, and nothing else shows it; if
// the call fails, it is removed again.)
func (h *fuzzHarness) heldRequests() int {
	n := 0
	for _, op := range h.stalled {
		if op.request && op.resv != nil { // parked on the fast path, it reserves nothing and has made nothing
			n++
		}
	}
	if h.waiter != nil && h.waiter.request {
		n++
	}
	return n
}

// unstick lets a failed run end: it releases the parked calls and closes the
// Notifier, so that no goroutine of the bubble stays blocked.
func (h *fuzzHarness) unstick() {
	for _, op := range h.stalled {
		op.point.free(ioPass)
	}
	if h.waiter != nil {
		h.waiter.cancel()
	}
	h.stalled, h.waiter = nil, nil
	_ = h.n.Close()
}

// compareWants checks the read calls against the model: which keys are
// wanted at all, and by which subscription.
func (h *fuzzHarness) compareWants() {
	h.t.Helper()
	for k := range fuzzKeys {
		c := fuzzBlocks[k].Cid()
		if got, want := h.n.Wanted(c), h.m.wanted(k); got != want {
			h.failf("Wanted(k%d) = %v, model says %v", k, got, want)
		}
		for i, ms := range h.m.subs {
			if got, want := h.subs[i].s.Wants(c), ms.wants[k]; got != want {
				h.failf("sub[%d].Wants(k%d) = %v, model says %v", i, k, got, want)
			}
		}
	}
}

func (op *fuzzOp) String() string { return fmt.Sprintf("%s (resv %v)", op.desc, op.resv) }
