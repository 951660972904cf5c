package notifier_test

import (
	"cmp"
	"slices"

	notifier "github.com/bitswapsync/notifier"
)

// This file holds the model's deliveries (model_test.go): a Publish's
// messages to each subscription, the pending slow-consumer ends, and the
// ends of subscriptions.

// deliver hands every live subscription the part of (blks, haves, donthaves)
// it wants, all of which some subscription wants, ends the wants that blks
// satisfy, reports the keys for which report is true, and then ends the
// subscriptions that overflowed: at once, or, if one wants a key that is
// busy (pendingBusy), it leaves the end pending, as Subscription.closeSlow
// does, its close marking the least of those keys, for settlePending.
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
		m.slowEnds = append(m.slowEnds, s.filter(allKeys()))
		if busy := m.pendingBusy(s); len(busy) > 0 {
			m.pendSeq++
			s.pending, s.mark, s.pendSeq = true, leastKey(busy), m.pendSeq
			continue
		}
		m.end(s, notifier.ErrSlowConsumer)
	}
}

// pendingBusy returns the keys that s wants and that the close ending s
// finds busy (Subscription.markIfBusy): reserved by a parked call (busy),
// marked by the waiting operation with a mark that holds (held), or marked
// by an older pending close whose mark holds, as its subscription still
// wants the key. The close marks the least of them (leastKey; busyKey,
// Subscription.markOne), parks on that key's claimant, and goes on only once
// none is busy. (The fuzz driver lets no later operation wait for a key,
// nor reserve one that a pending end's subscription wants, so a close finds
// no key busy that it did not find at first: its mark only moves, to the
// least key still busy, as the one it marks is let go.)
func (m *model) pendingBusy(s *mSub) []int {
	var busy []int
	for _, k := range s.filter(allKeys()) {
		held := slices.Contains(m.busy, k) || m.held != nil && m.held(m, k) || slices.ContainsFunc(m.subs, func(p *mSub) bool {
			return p != s && p.pending && (!s.pending || p.pendSeq < s.pendSeq) && p.wants[k] && p.mark == k
		})
		if held {
			busy = append(busy, k)
		}
	}
	return busy
}

// settlePending ends, oldest first, the pending ends that find no key busy
// any more: a parked call that held one up has been released (putOp
// resumes the close), or an older pending end that did has ended or moved
// its mark. One that still finds a key busy keeps its mark if its key is
// still busy (its claimant has not let go, and the close was not resumed),
// else moves it to the least key busy now. The fuzz driver calls it after
// each release, with busy the keys still reserved.
func (m *model) settlePending() {
	var pend []*mSub
	for _, s := range m.subs {
		if s.pending {
			pend = append(pend, s)
		}
	}
	slices.SortFunc(pend, func(a, b *mSub) int { return cmp.Compare(a.pendSeq, b.pendSeq) })
	for _, s := range pend {
		switch busy := m.pendingBusy(s); {
		case len(busy) == 0:
			m.end(s, notifier.ErrSlowConsumer)
		case !slices.Contains(busy, s.mark):
			s.mark = leastKey(busy)
		}
	}
}

// hasPending reports whether an end is pending.
func (m *model) hasPending() bool {
	return slices.ContainsFunc(m.subs, func(s *mSub) bool { return s.pending })
}

// pendingWants reports whether a subscription whose end is pending wants
// one of keys.
func (m *model) pendingWants(keys []int) bool {
	return slices.ContainsFunc(m.subs, func(s *mSub) bool {
		return s.pending && slices.ContainsFunc(keys, func(k int) bool { return k >= 0 && s.wants[k] })
	})
}

// pendingMarked reports whether one of keys is marked by a pending end
// with a mark that holds: its subscription still wants the key (op.holds).
// An operation that needs such a key waits behind the close, which is
// older. The close marks one key (pendingBusy), so an operation on another
// key that its subscription wants goes ahead, even one that the close
// found busy before (G11).
func (m *model) pendingMarked(keys []int) bool {
	return slices.ContainsFunc(m.subs, func(s *mSub) bool {
		return s.pending && s.wants[s.mark] && slices.Contains(keys, s.mark)
	})
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
// which ends it (the caller does). Once s has overflowed, its messages are
// dropped until the end, which may be pending.
//
// A channel subscription's unread messages sit, oldest first, in the
// channel's buffer (up to buf of them), then one in the hands of the drain
// goroutine, blocked handing it to the channel, then in the backlog, which
// WithMaxPending bounds. The fuzz test lets the drain goroutine settle
// (synctest.Wait) after every step, which makes that split exact. (When two
// operations deliver in one step, a drain goroutine that the first one
// started may not have taken its message when the second delivers: tight
// models that, for the fuzz test to tell when the outcome is not decided.)
func (m *model) accept(s *mSub, msg fzMsg) (slow bool) {
	if s.fn {
		s.got = append(s.got, msg)
		return false
	}
	if s.overflowed {
		return false
	}
	held := 1 // by the drain goroutine
	if m.tight {
		held = 0
	}
	if m.maxPending > 0 && len(s.queue) >= m.buf+held+m.maxPending {
		s.overflowed = true
		return true
	}
	s.queue = append(s.queue, msg)
	return false
}

// end ends s with err and releases its wants. What its channel's buffer
// holds stays readable; the rest is dropped. A subscription that overflowed
// ends with ErrSlowConsumer, whoever ends it (markClosed).
func (m *model) end(s *mSub, err error) {
	if s.overflowed {
		err = notifier.ErrSlowConsumer
	}
	s.pending = false
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
