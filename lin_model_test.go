package notifier_test

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/anishathalye/porcupine"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// linModel, the sequential specification of the Notifier that
// TestLinearizability checks histories against (linearizability_test.go),
// and its inputs and outputs.

const (
	linKeys    = 3 // key universe
	linSubs    = 3 // subscriptions, one per session
	linClients = 4 // concurrent callers
	linOps     = 25
	// linSlots: the sessions' subscriptions, then one request slot per
	// client, for the request its Fetch returned (linReqSlot).
	linSlots = linSubs + linClients
)

var linBlocks = func() (bs [linKeys]blocks.Block) {
	for i := range bs {
		bs[i] = blocks.NewBlock(fmt.Appendf(nil, "linearizability block %d", i))
	}
	return bs
}()

type keySet uint8 // bit i: key i

func (s keySet) String() string {
	var names []string
	for k := range linKeys {
		if s&(1<<k) != 0 {
			names = append(names, "k"+strconv.Itoa(k))
		}
	}
	return "[" + strings.Join(names, " ") + "]"
}

func (s keySet) cids() []cid.Cid {
	var cs []cid.Cid
	for k := range linKeys {
		if s&(1<<k) != 0 {
			cs = append(cs, linBlocks[k].Cid())
		}
	}
	return cs
}

type linKind uint8

const (
	linSubscribe linKind = iota
	linUnsubscribe
	linPublish
	linCollect // garbage collection deletes a block from the blockstore
	linPut     // a block is written to the blockstore behind the Notifier's back (lin_read_test.go)
	linFetch   // Notifier.Fetch of one key (lin_fetch_test.go)
	linRemove  // Remove of the request a Fetch returned
	linWanted  // Subscription.AppendWanted of one key (lin_read_test.go)
	linWants   // Subscription.Wants (lin_read_test.go)
)

// linIn is an operation's input.
type linIn struct {
	kind   linKind
	sub    int    // Subscribe, Unsubscribe, AppendWanted, Wants; Fetch, Remove: the client's request slot
	keys   keySet // Subscribe, Unsubscribe, collect; Fetch, AppendWanted, Wants (one key)
	remote bool   // Publish: from "peer", else local
	blks   keySet // Publish
	haves  keySet
	dhaves keySet
	drops  uint8 // slots whose message from this operation may be missing (markOverlaps)
	// gcRace: keys a garbage collection deleted during the operation's
	// call, whose blocks it may have seen or written on either side of
	// the delete (markOverlaps).
	gcRace keySet
	// ordered: the round checks the order in which each slot receives its
	// messages (linMsg.seq), as it does unless it collects garbage
	// (lin_read_test.go).
	ordered bool
}

// linMsg is what one subscription received from one operation.
type linMsg struct {
	n                   uint8  // number of messages: 0 or 1, more is wrong
	seq                 uint16 // its place among the messages the slot received in the round, from 0 (linState.recv)
	remote              bool
	blks, haves, dhaves keySet
	dup                 bool // a key twice in one field: wrong
}

// linOut is an operation's observed result.
type linOut struct {
	err     string
	msgs    [linSlots]linMsg
	cancels keySet
	dupCxl  bool       // a key reported twice by one operation: wrong
	fetched linFetched // Fetch: what it returned
	wanted  keySet     // AppendWanted, Wants: the key, if it was reported wanted
	badRead bool       // AppendWanted returned a key it was not asked about, twice, or out of order: wrong
}

// linState is the sequential state: who wants what, what is stored, and
// how many messages each slot has received. The count puts every message in
// its place in the order the slot received them (linMsg.seq), so that a
// linearization must order the operations that reach a subscription as it
// received their messages (G6: publish order). It adds no state to search:
// it is the number of messages to the slot among the operations linearized.
type linState struct {
	wants  [linKeys]uint8 // bit s: subscription (or request slot) s wants the key
	stored keySet
	unsure keySet           // keys whose block may or may not be stored (markOverlaps)
	recv   [linSlots]uint16 // messages received by each slot
}

func (st linState) wanted() keySet {
	var w keySet
	for k, subs := range st.wants {
		if subs != 0 {
			w |= 1 << k
		}
	}
	return w
}

func (st linState) wantsOf(s int) keySet {
	var w keySet
	for k, subs := range st.wants {
		if subs&(1<<s) != 0 {
			w |= 1 << k
		}
	}
	return w
}

// step applies in to st and returns the new state and the result that the
// specification prescribes.
//
// Where st cannot know whether a key the operation reads is stored (unsure,
// or in.gcRace), the operation's result says: seen is what it returned.
func (st linState) step(in linIn, seen linOut) (linState, linOut) {
	var out linOut
	switch in.kind {
	case linSubscribe:
		added := in.keys &^ st.wantsOf(in.sub)
		before := st.wanted()
		for k := range linKeys {
			if added&(1<<k) != 0 {
				st.wants[k] |= 1 << in.sub
			}
		}
		loose := added & (st.unsure | in.gcRace)
		hits := added&st.stored&^loose | loose&seen.msgs[in.sub].blks
		st.stored = st.stored&^loose | hits&loose
		st.unsure = st.unsure&^loose | loose&in.gcRace
		st = st.deliver(&out, in.ordered, false, hits, 0, 0)
		// A want created and satisfied by this very call is not reported.
		out.cancels = hits & before
	case linUnsubscribe:
		for k := range linKeys {
			if in.keys&(1<<k) != 0 && st.wants[k]&(1<<in.sub) != 0 {
				st.wants[k] &^= 1 << in.sub
				if st.wants[k] == 0 {
					out.cancels |= 1 << k
				}
			}
		}
	case linCollect:
		st.stored &^= in.keys
		st.unsure &^= in.keys
	case linPut:
		st.stored |= in.keys
	case linFetch:
		// The general path, NewRequest and Subscribe: the request, which
		// wants nothing yet, subscribes the key. linModel accepts the other
		// outcome, the block returned, apart (fetchHit).
		st, out = st.step(linIn{kind: linSubscribe, sub: in.sub, keys: in.keys, ordered: in.ordered, gcRace: in.gcRace}, seen)
		out.fetched = linFetchedRequest
	case linRemove:
		st, out.cancels = st.remove(in.sub)
	case linWanted, linWants:
		out.wanted = in.keys & st.wantsOf(in.sub)
	case linPublish:
		wanted := in.blks & st.wanted()
		written := in.blks
		if in.remote {
			written = wanted // G4: unwanted remote blocks are not stored
		}
		st = st.wrote(in, written)
		st = st.deliver(&out, in.ordered, in.remote, wanted, in.haves&st.wanted(), in.dhaves&st.wanted())
		out.cancels = wanted
	}
	return st, out
}

// deliver fills out.msgs with each subscription's part of the keys, all of
// which are wanted, each the slot's next message if ordered, and ends the
// wants that blks satisfy.
func (st linState) deliver(out *linOut, ordered, remote bool, blks, haves, dhaves keySet) linState {
	for s := range linSlots {
		w := st.wantsOf(s)
		m := linMsg{remote: remote, blks: blks & w, haves: haves & w, dhaves: dhaves & w}
		if m.blks|m.haves|m.dhaves != 0 {
			m.n = 1
			if ordered {
				m.seq = st.recv[s]
				st.recv[s]++
			}
			out.msgs[s] = m
		}
	}
	for k := range linKeys {
		if blks&(1<<k) != 0 {
			st.wants[k] = 0
		}
	}
	return st
}

func (st linState) String() string {
	var parts []string
	for k, subs := range st.wants {
		var ws []string
		for s := range linSlots {
			if subs&(1<<s) != 0 {
				ws = append(ws, slotName(s))
			}
		}
		parts = append(parts, fmt.Sprintf("k%d wanted by {%s}", k, strings.Join(ws, " ")))
	}
	var recv []string
	for s, c := range st.recv {
		if c > 0 {
			recv = append(recv, fmt.Sprintf("%s %d", slotName(s), c))
		}
	}
	unsure := ""
	if st.unsure != 0 {
		unsure = " (unsure: " + st.unsure.String() + ")"
	}
	return strings.Join(parts, ", ") + "; stored " + st.stored.String() + unsure + "; received {" + strings.Join(recv, ", ") + "}"
}

func (in linIn) String() string {
	switch in.kind {
	case linSubscribe:
		return fmt.Sprintf("s%d.Subscribe%v", in.sub, in.keys)
	case linUnsubscribe:
		return fmt.Sprintf("s%d.Unsubscribe%v", in.sub, in.keys)
	case linCollect:
		return fmt.Sprintf("blockstore.DeleteBlock%v", in.keys)
	case linPut:
		return fmt.Sprintf("blockstore.Put%v", in.keys)
	case linFetch:
		return fmt.Sprintf("%s=Fetch%v", slotName(in.sub), in.keys)
	case linRemove:
		return fmt.Sprintf("%s.Remove", slotName(in.sub))
	case linWanted:
		return fmt.Sprintf("%s.AppendWanted%v", slotName(in.sub), in.keys)
	case linWants:
		return fmt.Sprintf("%s.Wants%v", slotName(in.sub), in.keys)
	}
	from := "local"
	if in.remote {
		from = "peer"
	}
	return fmt.Sprintf("Publish(%s blocks%v haves%v donthaves%v)", from, in.blks, in.haves, in.dhaves)
}

func (out linOut) String() string {
	var parts []string
	if out.err != "" {
		parts = append(parts, "error "+out.err)
	}
	if out.fetched != linFetchedNothing {
		parts = append(parts, out.fetched.String())
	}
	if out.wanted != 0 {
		parts = append(parts, "wanted"+out.wanted.String())
	}
	if out.badRead {
		parts = append(parts, "a wrong answer!")
	}
	for s, m := range out.msgs {
		if m.n == 0 {
			continue
		}
		p := fmt.Sprintf("%s<-blocks%v haves%v donthaves%v (its message %d)", slotName(s), m.blks, m.haves, m.dhaves, m.seq+1)
		if m.n > 1 {
			p += fmt.Sprintf(" (%d messages!)", m.n)
		}
		if m.dup {
			p += " (duplicate key!)"
		}
		parts = append(parts, p)
	}
	if out.cancels != 0 || out.dupCxl {
		p := "cancel" + out.cancels.String()
		if out.dupCxl {
			p += " (reported twice!)"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, "; ")
}

var linModel = porcupine.Model{
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(linState), input.(linIn), output.(linOut)
		if ioErr := linIOErrs[out.err]; ioErr {
			return st.callsStore(in) && out == linOut{err: out.err}, st.failed(in, out.err)
		}
		if in.kind == linFetch && out.fetched == linFetchedBlock {
			return st.fetchHit(in, out), st
		}
		next, want := st.stepDrops(in, out)
		return want == out, next
	},
	DescribeOperation: func(input, output any) string {
		return fmt.Sprintf("%v -> %v", input, output)
	},
	DescribeState: func(state any) string { return state.(linState).String() },
}

// stepDrops is step, but for the messages to slots that in may drop
// (markOverlaps) and out lacks: those were not received, and take no place in
// their slot's order.
func (st linState) stepDrops(in linIn, out linOut) (linState, linOut) {
	next, want := st.step(in, out)
	for s := range linSlots {
		if in.drops&(1<<s) != 0 && out.msgs[s] == (linMsg{}) && want.msgs[s] != (linMsg{}) {
			want.msgs[s] = linMsg{} // dropped by the slot's Remove (markOverlaps)
			if in.ordered {
				next.recv[s]--
			}
		}
	}
	return next, want
}
