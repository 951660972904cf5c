package swapsim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// A block's data is its links followed by its payload, as in a real DAG: a
// session learns the keys of a node's children only by decoding the node.
//
//	uvarint n, then n times (uvarint len, CID bytes), then the payload
//
// The payload starts with the DAG's ID and the node's index, which makes every
// block of every DAG distinct, and is padded to Config.BlockSize.

// encodeNode returns the data of a node with the given children.
func encodeNode(children []cid.Cid, dagID uint64, idx int, size int) []byte {
	data := binary.AppendUvarint(nil, uint64(len(children)))
	for _, c := range children {
		b := c.Bytes()
		data = binary.AppendUvarint(data, uint64(len(b)))
		data = append(data, b...)
	}
	data = binary.BigEndian.AppendUint64(data, dagID)
	data = binary.BigEndian.AppendUint32(data, uint32(idx))
	return append(data, make([]byte, size)...)
}

var errBadNode = errors.New("swapsim: malformed node")

// decodeChildren returns the keys a node's data links to.
func decodeChildren(data []byte) ([]cid.Cid, error) {
	n, w := binary.Uvarint(data)
	if w <= 0 || n > uint64(len(data)) {
		return nil, errBadNode
	}
	data = data[w:]
	out := make([]cid.Cid, 0, n)
	for range n {
		l, w := binary.Uvarint(data)
		if w <= 0 || l > uint64(len(data)-w) {
			return nil, errBadNode
		}
		c, err := cid.Cast(data[w : w+int(l)])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errBadNode, err)
		}
		out = append(out, c)
		data = data[w+int(l):]
	}
	return out, nil
}

// node is one block of a DAG and what the simulated world knows about it.
type node struct {
	blk       blocks.Block
	children  []int32 // indices in the DAG
	holders   uint64  // peers that have the block; 0 for a local-only block
	addQueued atomic.Bool
}

// dag is a tree of blocks; node 0 is the root. It is immutable once built,
// but for node.addQueued and the registry's fields.
type dag struct {
	id    uint64
	nodes []*node
	index map[cid.Cid]int32

	refs     int  // requests fetching it; guarded by registry.mu
	complete bool // some request received every block; guarded by registry.mu
	pos      int  // index in registry.active, or -1; guarded by registry.mu
}

// newDAG builds a DAG of cfg's shape from rng, which alone decides it.
func newDAG(id uint64, rng *rand.Rand, cfg *Config) *dag {
	d := &dag{id: id, pos: -1}
	level := []int32{0}
	d.nodes = append(d.nodes, &node{})
	for depth := 1; depth < cfg.Depth; depth++ {
		var next []int32
		for _, p := range level {
			for range 1 + rng.IntN(cfg.Fanout) {
				d.nodes[p].children = append(d.nodes[p].children, int32(len(d.nodes)))
				next = append(next, int32(len(d.nodes)))
				d.nodes = append(d.nodes, &node{})
			}
		}
		level = next
	}
	d.build(rng, cfg)
	return d
}

// build makes the blocks, children first (they have higher indices), and
// gives each block its holders.
func (d *dag) build(rng *rand.Rand, cfg *Config) {
	d.index = make(map[cid.Cid]int32, len(d.nodes))
	for i := len(d.nodes) - 1; i >= 0; i-- {
		n := d.nodes[i]
		links := make([]cid.Cid, len(n.children))
		for j, c := range n.children {
			links[j] = d.nodes[c].blk.Cid()
		}
		n.blk = blocks.NewBlock(encodeNode(links, d.id, i, cfg.BlockSize))
		d.index[n.blk.Cid()] = int32(i)
		if i == 0 || rng.Float64() >= cfg.LocalOnly {
			n.holders = randomHolders(rng, cfg.Peers)
		}
	}
}

// randomHolders returns a non-empty random subset of peers 0..n-1.
func randomHolders(rng *rand.Rand, n int) uint64 {
	all := uint64(1)<<n - 1
	if n == maxPeers {
		all = ^uint64(0)
	}
	if h := rng.Uint64() & all; h != 0 {
		return h
	}
	return 1 << rng.IntN(n)
}

// pickPeer returns a uniformly chosen member of the non-empty set.
func pickPeer(rng *rand.Rand, set uint64) int {
	k := rng.IntN(bits.OnesCount64(set))
	for ; k > 0; k-- {
		set &= set - 1
	}
	return bits.TrailingZeros64(set)
}

// registry hands out the DAGs that requests fetch: fresh ones, ones that other
// requests are fetching (shared wants), and ones fetched whole before (every
// block already local).
type registry struct {
	mu        sync.Mutex
	active    []*dag // DAGs with refs > 0
	completed []*dag // ring of recent complete DAGs
	next      int    // the ring's next slot
}

const completedRing = 64

// acquire returns the DAG for a new request: fresh() unless rng picks a shared
// or a complete one.
func (r *registry) acquire(rng *rand.Rand, cfg *Config, fresh func() *dag) *dag {
	p := rng.Float64()
	r.mu.Lock()
	defer r.mu.Unlock()
	var d *dag
	switch {
	case p < cfg.Share && len(r.active) > 0:
		d = r.active[rng.IntN(len(r.active))]
	case p < cfg.Share+cfg.Refetch && len(r.completed) > 0:
		d = r.completed[rng.IntN(len(r.completed))]
	default:
		d = fresh()
	}
	if d.refs == 0 {
		d.pos = len(r.active)
		r.active = append(r.active, d)
	}
	d.refs++
	return d
}

// release ends a request's use of d; complete says it received every block.
func (r *registry) release(d *dag, complete bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d.refs--
	if d.refs == 0 {
		last := r.active[len(r.active)-1]
		r.active[d.pos], last.pos = last, d.pos
		r.active = r.active[:len(r.active)-1]
		d.pos = -1
	}
	if complete && !d.complete {
		d.complete = true
		if len(r.completed) < completedRing {
			r.completed = append(r.completed, d)
			return
		}
		r.completed[r.next] = d
		r.next = (r.next + 1) % completedRing
	}
}
