package notifier_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	notifier "github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/faultbs"
)

// This file is a small sequential model of the contract in SPEC.md, with no
// locks and no goroutines: the fuzz test (fuzz_test.go) runs the same
// operations against it and against a Notifier and compares them after every
// step. Keys are indices into a fixed set of blocks (fuzzKeys).

// Key specs decoded from fuzz input: a key index, or one of these.
const (
	undefKey  = -1 // cid.Undef
	nilBlock  = -2 // a nil block
	undefBlck = -3 // a block whose CID is cid.Undef
)

// fzMsg is a delivered ResponseMessage in comparable form: keys as sorted
// indices, so that duplicates show.
type fzMsg struct {
	From                     string
	Blocks, Haves, DontHaves []int
}

func (m fzMsg) String() string {
	return fmt.Sprintf("{from %q blocks %v haves %v donthaves %v}", m.From, m.Blocks, m.Haves, m.DontHaves)
}

func (m fzMsg) equal(o fzMsg) bool {
	return m.From == o.From && slices.Equal(m.Blocks, o.Blocks) &&
		slices.Equal(m.Haves, o.Haves) && slices.Equal(m.DontHaves, o.DontHaves)
}

func (m fzMsg) empty() bool { return len(m.Blocks)+len(m.Haves)+len(m.DontHaves) == 0 }

// mSub is the model of one Subscription.
type mSub struct {
	id    uint64
	fn    bool         // NewSubscriptionFunc: messages are taken synchronously
	wants map[int]bool // wanted keys
	ended bool
	err   error // what Err returns: nil, ErrClosed or ErrSlowConsumer
	// overflowed: an operation pushed s past WithMaxPending; from then on
	// its messages are dropped. Its end may be pending (pending, mark;
	// see model.deliver).
	overflowed bool
	pending    bool    // overflowed, and its end is pending: live, wanting what it wanted
	mark       int     // pending: the one key its close marks, the least it found busy in its last round
	pendSeq    uint64  // pending: the order in which the pending ends began
	queue      []fzMsg // channel subscription: delivered and not read yet, oldest first
	got        []fzMsg // func subscription: delivered during the current step
	// fs is the real side (fuzz_test.go): the harness lines its subscriptions
	// up with subs by it (syncSubs), since a Fetch makes its request in the
	// model only when it takes effect.
	fs *fuzzSub
}

// model is the sequential specification. Its fields are the whole observable
// state: what each subscription wants and has been sent, what the blockstore
// holds, and the faults switched on.
type model struct {
	bs         bool // false: New(nil), notify only
	buf        int  // WithBufferSize
	maxPending int  // WithMaxPending; 0 = unbounded
	closed     bool
	stored     [fuzzKeys]bool
	subs       []*mSub // every subscription ever created, in order
	live       map[uint64]*mSub
	getFail    bool
	putFail    bool
	// checkMiss: WithFailedCheckAsMiss. A Get of Subscribe or Fetch that
	// fails, but not with the call's context, is a miss; each call that
	// returns nil having taken such a failure hands it to the option's
	// function once.
	checkMiss bool
	cancels   []int // keys reported to the cancel function during the current step
	// taken: the key named by each error handed to WithFailedCheckAsMiss's
	// function during the current step, one per call: the key of the
	// call's first failed Get.
	taken    []int
	newFuncs int     // calls of Fetch's newFunc during the current step
	slowEnds [][]int // keys wanted by each subscription pushed past WithMaxPending, when it was
	tight    bool    // accept as if no drain goroutine had taken a message yet (see accept)
	// busy: the keys that the fuzz test's parked calls reserve as the
	// operation being committed ends a slow consumer (the driver sets it);
	// the end of one that wants such a key is left pending (deliver).
	busy    []int
	pendSeq uint64 // pending ends begun so far
	// held, if set, reports whether the fuzz test's waiting operation holds
	// k on m with its one mark (fuzzHarness.waiterHolds): a close that ends
	// a slow consumer finds such a key busy too, and is left pending with
	// the waiter, which resumes it as it ends (putOp).
	held func(m *model, k int) bool
}

// ioOutcome is how a blockstore call that the fuzz test stalled ends when it
// is released (gateStore, in stall_store_test.go).
type ioOutcome uint8

const (
	ioPass   ioOutcome = iota // the call goes on to the store, which fails only if a fault is on
	ioFail                    // it fails having done nothing
	ioTorn                    // it does its work and then fails: a PutMany has written
	ioCancel                  // the operation's context is cancelled while it stalls
)

func (o ioOutcome) String() string { return [...]string{"pass", "fail", "torn", "cancel"}[o&3] }

// getErr is the error of a Subscribe's blockstore check that ends as o.
func (m *model) getErr(o ioOutcome) error {
	switch {
	case o == ioCancel:
		return context.Canceled
	case o != ioPass || m.getFail:
		return faultbs.ErrInjected
	}
	return nil
}

// takesMiss reports whether err, the error of a Get (getErr), is taken for
// a miss: with WithFailedCheckAsMiss, a failure of the store, not the
// call's own context ending.
func (m *model) takesMiss(err error) bool {
	return m.checkMiss && err != nil && err != context.Canceled
}

// checkKeys is the blockstore check of a Subscribe of added, the keys its
// subscription does not want yet, one Get each in their order, the first
// ending as o (the call that the fuzz test may stall is the first) and the
// others as the store says now. It returns the error that fails the call,
// or, the failures taken for misses (takesMiss), the keys whose Get failed,
// in order. Without WithFailedCheckAsMiss that is getErr(o) of the first
// key, or nil: all fail or none.
func (m *model) checkKeys(added []int, o ioOutcome) (failed []int, err error) {
	for j, k := range added {
		oj := ioPass
		if j == 0 {
			oj = o
		}
		switch err := m.getErr(oj); {
		case err == nil:
		case !m.takesMiss(err):
			return nil, err
		default:
			failed = append(failed, k)
		}
	}
	return failed, nil
}

// putErr is the error of a PutMany that ends as o, and whether it wrote.
func (m *model) putErr(o ioOutcome) (err error, wrote bool) {
	switch {
	case o == ioCancel:
		return context.Canceled, false
	case m.putFail:
		return faultbs.ErrInjected, false
	case o == ioPass:
		return nil, true
	}
	return faultbs.ErrInjected, o == ioTorn
}

// clone returns a deep copy of m, for the fuzz test to try an operation on.
func (m *model) clone() *model {
	c := *m
	c.subs = make([]*mSub, len(m.subs))
	c.live = make(map[uint64]*mSub, len(m.live))
	for i, s := range m.subs {
		cs := *s
		cs.wants = maps.Clone(s.wants)
		cs.queue = slices.Clone(s.queue)
		cs.got = slices.Clone(s.got)
		c.subs[i] = &cs
		if m.live[s.id] == s {
			c.live[s.id] = &cs
		}
	}
	c.cancels = slices.Clone(m.cancels)
	c.taken = slices.Clone(m.taken)
	c.busy = slices.Clone(m.busy)
	c.slowEnds = nil
	return &c
}

func newModel(bs bool, buf, maxPending int) *model {
	return &model{bs: bs, buf: buf, maxPending: maxPending, live: make(map[uint64]*mSub)}
}

// wanted reports whether any subscription wants k, including one ended in
// this step whose wants are not released yet.
func (m *model) wanted(k int) bool {
	for _, s := range m.subs {
		if s.wants[k] {
			return true
		}
	}
	return false
}

func (m *model) stats() notifier.Stats {
	st := notifier.Stats{Subscriptions: len(m.live)}
	for k := range fuzzKeys {
		n := 0
		for _, s := range m.live {
			if s.wants[k] {
				n++
			}
		}
		st.Wants += n
		if n > 0 {
			st.Keys++
		}
	}
	return st
}

func (m *model) newSubscription(id uint64, fn bool) (*mSub, error) {
	if m.closed {
		return nil, notifier.ErrClosed
	}
	if m.live[id] != nil {
		return nil, notifier.ErrDuplicateSession
	}
	s := &mSub{id: id, fn: fn, wants: make(map[int]bool)}
	m.subs = append(m.subs, s)
	m.live[id] = s
	return s, nil
}

// newRequest is NewRequest: a subscription with a delivery function and no
// session ID, so it never collides. The model keys it in live by an ID of its
// own, above every session ID.
func (m *model) newRequest(fs *fuzzSub) (*mSub, error) {
	if m.closed {
		return nil, notifier.ErrClosed
	}
	return m.addRequest(fs), nil
}

func (m *model) addRequest(fs *fuzzSub) *mSub {
	s := &mSub{id: 1<<32 + uint64(len(m.subs)), fn: true, wants: make(map[int]bool), fs: fs}
	m.subs = append(m.subs, s)
	m.live[s.id] = s
	return s
}

// fetchCommit is Fetch of k past its early checks and any wait, its Get
// ending as o; fs is the real side of the request it may make.
//
// fast: the call found k alone at its peek (nobody wanted, reserved or
// waited for it) and took the path without reservations: a found block is
// returned and nothing is made (newFunc is not called), a failed Get
// changes nothing, and a miss makes a request (calls newFunc) that wants k.
// With WithFailedCheckAsMiss a failed Get is a miss, whose error goes to the
// option's function (taken).
// Fetch leaves that path for the general one whenever k's version moves
// between its peek and its commit, which every want of k added meanwhile
// does: so a k wanted now means the general path too.
//
// The general path, and a Notifier without a blockstore, is NewRequest and
// a Subscribe of k: the request is made (newFunc called) before the Get and
// removed again if the Subscribe fails; a found block is delivered to it,
// and to every subscription waiting for k, as Subscribe delivers it, and
// Fetch returns the request, which then wants nothing.
func (m *model) fetchCommit(k int, o ioOutcome, fast bool, fs *fuzzSub) error {
	if m.bs && fast && !m.wanted(k) {
		err := m.getErr(o)
		switch {
		case err != nil && !m.takesMiss(err):
			return err
		case err == nil && m.stored[k]:
			return nil // the block is returned
		}
		m.newFuncs++
		m.addRequest(fs).wants[k] = true
		if err != nil {
			m.taken = append(m.taken, k)
		}
		return nil
	}
	m.newFuncs++
	s := m.addRequest(fs)
	if err := m.subscribeCommit(s, []int{k}, o, false); err != nil {
		m.subs = m.subs[:len(m.subs)-1] // Fetch removes it: it never was
		delete(m.live, s.id)
		return err
	}
	return nil
}

// The model of Subscribe and Publish is in two parts, the checks done before
// an operation looks at the index (early: validation, Close, a cancelled
// context) and the rest (commit), because the fuzz test starts the second
// part later when the operation waits for a reservation or stalls in the
// blockstore. Key specs: a key, or undefKey; block specs: a key, nilBlock or
// undefBlck.

// subscribeEarly is what Subscribe checks before it looks at the index (and
// waits for reservations): early is set if it returns err there.
func (m *model) subscribeEarly(keys []int, cancelled bool) (err error, early bool) {
	switch {
	case slices.Contains(keys, undefKey):
		return notifier.ErrInvalidCid, true
	case m.closed:
		return notifier.ErrClosed, true
	case cancelled:
		return context.Canceled, true
	}
	return nil, false
}

// subscribeIO reports whether Subscribe, past its early checks and any wait,
// calls the blockstore.
func (m *model) subscribeIO(s *mSub, keys []int) bool {
	return m.bs && !s.ended && len(s.added(keys)) > 0
}

// added is the keys of a Subscribe that s does not want yet, once each.
func (s *mSub) added(keys []int) []int {
	var added []int
	for _, k := range keys {
		if !s.wants[k] && !slices.Contains(added, k) {
			added = append(added, k)
		}
	}
	return added
}

func (s *mSub) endedErr() error {
	if s.err == notifier.ErrSlowConsumer {
		return notifier.ErrSlowConsumer
	}
	return notifier.ErrClosed
}

// subscribeCommit is Subscribe past its early checks and any wait, with its
// blockstore check ending as o. afterStall: the check was stalled, so s was
// live when it started and may have ended since; the implementation checks
// that only once the blockstore has answered.
func (m *model) subscribeCommit(s *mSub, keys []int, o ioOutcome, afterStall bool) error {
	if s.ended && !afterStall {
		return s.endedErr()
	}
	added := s.added(keys)
	var failed []int // taken for misses (WithFailedCheckAsMiss)
	if m.bs && len(added) > 0 {
		var err error
		if failed, err = m.checkKeys(added, o); err != nil {
			return err // all or nothing: no want added
		}
	}
	if s.ended {
		return s.endedErr() // the failures taken for misses go nowhere
	}
	// A want that this call both creates and satisfies had no WANT sent for
	// it: its end is reported only if someone else wanted the key before.
	before := make(map[int]bool)
	for _, k := range added {
		before[k] = m.wanted(k)
		s.wants[k] = true
	}
	if !m.bs {
		return nil
	}
	var hits []int
	for _, k := range added {
		if m.stored[k] && !slices.Contains(failed, k) {
			hits = append(hits, k)
		}
	}
	overflowed := s.overflowed
	m.deliver("", hits, nil, nil, func(k int) bool { return before[k] })
	if s.overflowed && !overflowed { // its own blockstore hits overflowed it, ended or pending
		return notifier.ErrSlowConsumer // the failures taken for misses go nowhere
	}
	if len(failed) > 0 {
		m.taken = append(m.taken, failed[0]) // the first, once the call has taken effect
	}
	return nil
}

func (m *model) unsubscribe(s *mSub, keys []int) {
	for _, k := range keys {
		if k >= 0 && s.wants[k] {
			delete(s.wants, k)
			if !m.wanted(k) {
				m.cancels = append(m.cancels, k)
			}
		}
	}
}

func (m *model) remove(s *mSub) {
	if !s.ended {
		m.end(s, nil)
	}
}

func (m *model) close() {
	if m.closed {
		return
	}
	m.closed = true
	for _, s := range m.subs {
		if !s.ended {
			m.end(s, notifier.ErrClosed)
		}
	}
}

// publishEarly is what Publish checks before it looks at the index (and waits
// for reservations): early is set if it returns err there.
func (m *model) publishEarly(blks, haves, donthaves []int, cancelled bool) (err error, early bool) {
	if err := validateModelMsg(blks, haves, donthaves); err != nil {
		return err, true
	}
	switch {
	case m.closed:
		return notifier.ErrClosed, true
	case cancelled:
		return context.Canceled, true
	case len(blks)+len(haves)+len(donthaves) == 0:
		return nil, true
	}
	return nil, false
}

// publishStores is what Publish, past its early checks and any wait, would
// PutMany.
func (m *model) publishStores(from string, blks []int) []int {
	var store []int
	for _, k := range distinct(blks) {
		if m.wanted(k) || from == "" {
			store = append(store, k)
		}
	}
	return store
}

// publishCommit is Publish past its early checks and any wait, with its
// PutMany ending as o.
func (m *model) publishCommit(from string, blks, haves, donthaves []int, o ioOutcome) error {
	var wantedBlks []int
	for _, k := range distinct(blks) {
		if m.wanted(k) {
			wantedBlks = append(wantedBlks, k)
		}
	}
	if store := m.publishStores(from, blks); m.bs && len(store) > 0 {
		err, wrote := m.putErr(o)
		for _, k := range store {
			m.stored[k] = m.stored[k] || wrote
		}
		if err != nil {
			return err // nothing delivered or ended
		}
	}
	m.deliver(from, wantedBlks, m.wantedOf(haves), m.wantedOf(donthaves), func(int) bool { return true })
	return nil
}

func validateModelMsg(blks, haves, donthaves []int) error {
	for _, k := range blks {
		switch k {
		case nilBlock:
			return notifier.ErrNilBlock
		case undefBlck:
			return notifier.ErrInvalidCid
		}
	}
	if slices.Contains(haves, undefKey) || slices.Contains(donthaves, undefKey) {
		return notifier.ErrInvalidCid
	}
	return nil
}

func (m *model) wantedOf(keys []int) []int {
	return slices.DeleteFunc(distinct(keys), func(k int) bool { return !m.wanted(k) })
}

func distinct(keys []int) []int {
	var d []int
	for _, k := range keys {
		if !slices.Contains(d, k) {
			d = append(d, k)
		}
	}
	return d
}

// describe is the model state for failure messages.
func (m *model) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "closed=%v getFail=%v putFail=%v checkMiss=%v stored=", m.closed, m.getFail, m.putFail, m.checkMiss)
	for k, ok := range m.stored {
		if ok {
			fmt.Fprintf(&b, "k%d ", k)
		}
	}
	for i, s := range m.subs {
		fmt.Fprintf(&b, "\n  sub[%d] id=%d fn=%v ended=%v err=%v wants=%v queue=%v",
			i, s.id, s.fn, s.ended, s.err, s.filter(allKeys()), s.queue)
		if s.pending {
			fmt.Fprintf(&b, " end pending (mark k%d)", s.mark)
		}
	}
	return b.String()
}

func allKeys() []int {
	ks := make([]int, fuzzKeys)
	for i := range ks {
		ks[i] = i
	}
	return ks
}
