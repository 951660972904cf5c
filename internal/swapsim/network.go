package swapsim

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
)

// The network is one scheduler goroutine and one goroutine per peer, plus one
// for local adds: a fixed number, whatever the load. A WANT schedules each
// peer's answer at its due time in a min-heap; the scheduler moves answers
// that are due to their peer's queue; the peer sends everything queued as one
// message. A peer honours CANCELs: it drops an answer if a CANCEL of its key
// reached the wire after the WANT (checker.gen). A peer whose message the
// client failed to store sends it again (answer).

type itemKind uint8

const (
	itemBlock itemKind = iota
	itemHave
	itemDontHave
	itemLocal // a block added locally, on the local pseudo-peer
)

// item is one entry of a message, due at some time.
type item struct {
	key  cid.Cid
	blk  blocks.Block // itemBlock, itemLocal
	kind itemKind
	gen  uint32 // the key's wire generation when the WANT was sent
}

type event struct {
	due  int64  // sim clock
	seq  uint64 // FIFO among equal due times
	peer int
	it   item
}

func (e *event) before(f *event) bool {
	return e.due < f.due || e.due == f.due && e.seq < f.seq
}

// peer is a peer's queue of answers that are due.
type peer struct {
	idx  int        // in network.peers
	from string     // peer ID; "" for the local pseudo-peer
	rng  *rand.Rand // used by the peer's goroutine only

	mu   sync.Mutex // guards q
	q    []item
	wake chan struct{} // capacity 1: the goroutine has work
}

type network struct {
	s *sim

	mu   sync.Mutex // guards heap and seq; taken before a peer's mu
	heap []event    // min-heap on (due, seq)
	seq  uint64

	poke  chan struct{} // capacity 1: the heap's head changed
	stop  chan struct{} // closed by close
	peers []*peer       // cfg.Peers remote peers, then the local one
	wg    sync.WaitGroup
}

func newNetwork(s *sim) *network {
	n := &network{s: s, poke: make(chan struct{}, 1), stop: make(chan struct{})}
	for i := range s.cfg.Peers + 1 {
		p := &peer{idx: i, from: fmt.Sprintf("peer-%02d", i), wake: make(chan struct{}, 1)}
		p.rng = rand.New(rand.NewPCG(s.cfg.Seed, 1<<32+uint64(i)))
		if i == s.cfg.Peers {
			p.from = ""
		}
		n.peers = append(n.peers, p)
	}
	return n
}

// goroutines is how many goroutines start runs.
func (n *network) goroutines() int { return len(n.peers) + 1 }

func (n *network) start() {
	n.wg.Add(n.goroutines())
	go n.schedule()
	for _, p := range n.peers {
		go n.serve(p)
	}
}

// close stops the network and waits for its goroutines; answers not sent yet
// are dropped.
func (n *network) close() {
	close(n.stop)
	n.wg.Wait()
}

// after schedules it on peer p, d from now.
func (n *network) after(d time.Duration, p int, it item) {
	n.mu.Lock()
	n.seq++
	n.push(event{due: n.s.now() + int64(d), seq: n.seq, peer: p, it: it})
	head := n.heap[0].seq == n.seq
	n.mu.Unlock()
	if head {
		select {
		case n.poke <- struct{}{}:
		default:
		}
	}
}

func (n *network) schedule() {
	defer n.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		t.Reset(n.dispatch())
		select {
		case <-n.poke:
		case <-t.C:
		case <-n.stop:
			return
		}
	}
}

// dispatch moves the due events to their peers and returns the time until
// the next one.
func (n *network) dispatch() time.Duration {
	now := n.s.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for len(n.heap) > 0 && n.heap[0].due <= now {
		e := n.pop()
		n.peers[e.peer].push(e.it) // NOTE: takes the peer's mu under n.mu
	}
	if len(n.heap) == 0 {
		return time.Hour
	}
	return time.Duration(n.heap[0].due - now)
}

func (p *peer) push(it item) {
	p.mu.Lock()
	p.q = append(p.q, it)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// serve sends p's due answers, one message per wake-up.
func (n *network) serve(p *peer) {
	defer n.wg.Done()
	var batch []item
	for {
		select {
		case <-p.wake:
		case <-n.stop:
			return
		}
		p.mu.Lock()
		batch, p.q = p.q, batch[:0]
		p.mu.Unlock()
		n.answer(p, batch)
		clear(batch)
	}
}

// answer sends p's message made of batch, leaving out what was cancelled.
//
// If the client fails to store the message's blocks, nothing of it reached
// the sessions, and p sends what batch kept again after a fresh latency: a
// remote peer as it would answer the WANT that the client repeats for a
// block it still wants (boxo rebroadcasts its wants), the local pseudo-peer
// as a user retries an add that failed. What is sent again keeps its WANT's
// generation, so a CANCEL meanwhile still drops it.
func (n *network) answer(p *peer, batch []item) {
	msg := notifier.ResponseMessage{From: p.from}
	kept := batch[:0]
	for _, it := range batch {
		if it.kind != itemLocal && n.s.chk.gen(it.key) != it.gen {
			n.s.ctr.dropped.Add(1)
			continue
		}
		kept = append(kept, it)
		switch it.kind {
		case itemBlock, itemLocal:
			msg.Blocks = append(msg.Blocks, it.blk)
		case itemHave:
			msg.Haves = append(msg.Haves, it.key)
		case itemDontHave:
			msg.DontHaves = append(msg.DontHaves, it.key)
		}
	}
	if p.from != "" && p.rng.Float64() < n.s.cfg.Unsolicited {
		junk := fmt.Sprintf("swapsim: unsolicited block %d from %s", n.s.ctr.junk.Add(1), p.from)
		msg.Blocks = append(msg.Blocks, blocks.NewBlock([]byte(junk)))
	}
	if len(msg.Blocks)+len(msg.Haves)+len(msg.DontHaves) == 0 {
		return
	}
	if again := n.s.receive(msg); again && len(kept) > 0 {
		n.s.ctr.resent.Add(1)
		d := max(n.latency(p.rng), retryDelay)
		for _, it := range kept {
			n.after(d, p.idx, it)
		}
	}
}

// want sends the WANTs for nd's block: want-block to one holder (and, by
// chance, to a second one) and want-have to the other peers asked, up to
// cfg.WantPeers. It returns when the block is due.
func (n *network) want(rng *rand.Rand, nd *node, gen uint32) (blockDue time.Duration) {
	cfg := n.s.cfg
	blockDue = n.latency(rng)
	asked := uint64(0)
	for i := range cfg.WantPeers {
		p, lat := n.pickAsked(rng, nd.holders, asked, i == 0), n.latency(rng)
		asked |= 1 << p
		it := item{key: nd.blk.Cid(), gen: gen, kind: itemDontHave}
		switch holder := nd.holders&(1<<p) != 0; {
		case holder && (i == 0 || rng.Float64() < cfg.DupBlock):
			it.kind, it.blk = itemBlock, nd.blk
			if i == 0 {
				blockDue = lat
			}
		case holder:
			it.kind = itemHave
		}
		n.after(lat, p, it)
	}
	return blockDue
}

// pickAsked picks a peer not asked yet: a holder first, if there is one.
func (n *network) pickAsked(rng *rand.Rand, holders, asked uint64, first bool) int {
	if first && holders != 0 {
		return pickPeer(rng, holders)
	}
	all := uint64(1)<<n.s.cfg.Peers - 1
	if n.s.cfg.Peers == maxPeers {
		all = ^uint64(0)
	}
	return pickPeer(rng, all&^asked)
}

func (n *network) latency(rng *rand.Rand) time.Duration {
	lo, hi := n.s.cfg.MinLatency, n.s.cfg.MaxLatency
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// addLocal schedules the local add of blk, d from now.
func (n *network) addLocal(d time.Duration, blk blocks.Block) {
	n.s.ctr.localAdds.Add(1)
	n.after(d, len(n.peers)-1, item{key: blk.Cid(), blk: blk, kind: itemLocal})
}

func (n *network) push(e event) {
	n.heap = append(n.heap, e)
	for i := len(n.heap) - 1; i > 0; {
		parent := (i - 1) / 2
		if !n.heap[i].before(&n.heap[parent]) {
			break
		}
		n.heap[i], n.heap[parent] = n.heap[parent], n.heap[i]
		i = parent
	}
}

func (n *network) pop() event {
	h := n.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = event{}
	h = h[:last]
	for i := 0; ; {
		m, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h[l].before(&h[m]) {
			m = l
		}
		if r < len(h) && h[r].before(&h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	n.heap = h
	return top
}
