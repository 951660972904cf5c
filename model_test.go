package notifier_test

import (
	"context"
	"fmt"
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
	err   error   // what Err returns: nil, ErrClosed or ErrSlowConsumer
	queue []fzMsg // channel subscription: delivered and not read yet, oldest first
	got   []fzMsg // func subscription: delivered during the current step
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
	cancels    []int // keys reported to the cancel function during the current step
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

func (m *model) subscribe(s *mSub, keys []int, cancelled bool) error {
	if slices.Contains(keys, undefKey) {
		return notifier.ErrInvalidCid
	}
	switch {
	case m.closed:
		return notifier.ErrClosed
	case cancelled:
		return context.Canceled
	case s.ended && s.err == notifier.ErrSlowConsumer:
		return notifier.ErrSlowConsumer
	case s.ended:
		return notifier.ErrClosed
	}
	var added []int
	for _, k := range keys {
		if !s.wants[k] && !slices.Contains(added, k) {
			added = append(added, k)
		}
	}
	if m.bs && len(added) > 0 && m.getFail {
		return faultbs.ErrInjected // all or nothing: no want added
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
		if m.stored[k] {
			hits = append(hits, k)
		}
	}
	m.deliver("", hits, nil, nil, func(k int) bool { return before[k] })
	if s.ended { // its own blockstore hits overflowed it
		return notifier.ErrSlowConsumer
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

// publish takes block specs (key, nilBlock or undefBlck) and key specs (key
// or undefKey).
func (m *model) publish(from string, blks, haves, donthaves []int, cancelled bool) error {
	if err := validateModelMsg(blks, haves, donthaves); err != nil {
		return err
	}
	switch {
	case m.closed:
		return notifier.ErrClosed
	case cancelled:
		return context.Canceled
	}
	var wantedBlks, store []int
	for _, k := range distinct(blks) {
		w := m.wanted(k)
		if w {
			wantedBlks = append(wantedBlks, k)
		}
		if w || from == "" {
			store = append(store, k)
		}
	}
	if m.bs && len(store) > 0 {
		if m.putFail {
			return faultbs.ErrInjected // nothing stored, delivered or ended
		}
		for _, k := range store {
			m.stored[k] = true
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

// deliver hands every live subscription the part of (blks, haves, donthaves)
// it wants, all of which some subscription wants, ends the wants that blks
// satisfy, reports the keys for which report is true, and then releases the
// subscriptions that overflowed.
func (m *model) deliver(from string, blks, haves, donthaves []int, report func(k int) bool) {
	var slow []*mSub
	for _, s := range m.subs {
		if s.ended {
			continue
		}
		msg := fzMsg{From: from, Blocks: s.filter(blks), Haves: s.filter(haves), DontHaves: s.filter(donthaves)}
		if !msg.empty() && m.accept(s, msg) {
			slow = append(slow, s)
		}
	}
	for _, k := range blks {
		for _, s := range m.subs {
			delete(s.wants, k)
		}
		if report(k) {
			m.cancels = append(m.cancels, k)
		}
	}
	for _, s := range slow {
		m.release(s)
	}
}

func (s *mSub) filter(keys []int) []int {
	var f []int
	for _, k := range keys {
		if s.wants[k] {
			f = append(f, k)
		}
	}
	slices.Sort(f)
	return f
}

// accept queues msg for s and reports whether s overflowed WithMaxPending,
// which ends it (its wants are released by the caller).
//
// A channel subscription's unread messages sit, oldest first, in the
// channel's buffer (up to buf of them), then one in the hands of the drain
// goroutine, blocked handing it to the channel, then in the backlog, which
// WithMaxPending bounds. The fuzz test lets the drain goroutine settle
// (synctest.Wait) after every step, which makes that split exact.
func (m *model) accept(s *mSub, msg fzMsg) (slow bool) {
	if s.fn {
		s.got = append(s.got, msg)
		return false
	}
	if m.maxPending > 0 && len(s.queue) >= m.buf+1+m.maxPending {
		s.ended, s.err = true, notifier.ErrSlowConsumer
		s.queue = s.queue[:m.buf]
		delete(m.live, s.id)
		return true
	}
	s.queue = append(s.queue, msg)
	return false
}

// end ends s with err and releases its wants. What its channel's buffer
// holds stays readable; the rest is dropped.
func (m *model) end(s *mSub, err error) {
	s.ended, s.err = true, err
	s.queue = s.queue[:min(len(s.queue), m.buf)]
	delete(m.live, s.id)
	m.release(s)
}

func (m *model) release(s *mSub) {
	keys := make([]int, 0, len(s.wants))
	for k := range s.wants {
		keys = append(keys, k)
	}
	clear(s.wants)
	for _, k := range keys {
		if !m.wanted(k) {
			m.cancels = append(m.cancels, k)
		}
	}
}

// describe is the model state for failure messages.
func (m *model) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "closed=%v getFail=%v putFail=%v stored=", m.closed, m.getFail, m.putFail)
	for k, ok := range m.stored {
		if ok {
			fmt.Fprintf(&b, "k%d ", k)
		}
	}
	for i, s := range m.subs {
		fmt.Fprintf(&b, "\n  sub[%d] id=%d fn=%v ended=%v err=%v wants=%v queue=%v",
			i, s.id, s.fn, s.ended, s.err, s.filter(allKeys()), s.queue)
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
