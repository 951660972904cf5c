package benchkit

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/bitswapsync/notifier"
)

// Shapes of the workloads, from SPEC.md.
const (
	W1Keys      = 1024 // keys every W1 subscription wants
	W2Subs      = 256  // W2 subscriptions
	W2KeysPer   = 64   // keys each W2 subscription wants, disjoint
	W2Blocks    = 16   // blocks per W2 message
	W2Haves     = 32   // HAVEs per W2 message
	W2DontHaves = 8    // DONT_HAVEs per W2 message
	Peers       = 8    // peers the messages come from, in turn
	W5Size      = 1000 // W5: subscriptions, and keys per subscription
	BlockSize   = 64   // bytes per block
)

// Peer returns the ID of peer i mod Peers.
func Peer(i int) string { return fmt.Sprintf("peer%d", i%Peers) }

// Blocks returns n distinct blocks of BlockSize bytes; tag makes them
// distinct from the blocks of other tags.
func Blocks(tag string, n int) []blocks.Block {
	out := make([]blocks.Block, n)
	for i := range out {
		data := make([]byte, BlockSize)
		copy(data, fmt.Sprintf("%s/%d/", tag, i))
		out[i] = blocks.NewBlock(data)
	}
	return out
}

// Keys returns the CIDs of blks.
func Keys(blks []blocks.Block) []cid.Cid {
	out := make([]cid.Cid, len(blks))
	for i, b := range blks {
		out[i] = b.Cid()
	}
	return out
}

// FakeKeys returns n distinct CIDv1 raw keys whose sha2-256 "digests" are
// tag and a counter: valid keys, made without hashing, for keys that are
// wanted but never published (W3's churn, W5).
func FakeKeys(tag uint32, n int) []cid.Cid {
	out := make([]cid.Cid, n)
	var digest [32]byte
	binary.BigEndian.PutUint32(digest[:4], tag)
	for i := range out {
		binary.BigEndian.PutUint64(digest[4:12], uint64(i))
		h, err := mh.Encode(digest[:], mh.SHA2_256)
		if err != nil {
			panic(err) // a 32-byte sha2-256 digest always encodes
		}
		out[i] = cid.NewCidV1(cid.Raw, h)
	}
	return out
}

// Plan is one round of a workload: what each subscription wants at the
// start of the round, and the messages published during it. Every block of
// the round is wanted by at least one subscription, so a round ends every
// want; the next round wants the same keys again. Each subscription receives
// PerSub blocks per round.
type Plan struct {
	SubKeys [][]cid.Cid // keys subscription i wants; shared, do not modify
	Blocks  []blocks.Block
	Keys    []cid.Cid // Keys(Blocks)
	Msgs    []notifier.ResponseMessage
	PerSub  int
}

// W1 is the fan-out plan: subs subscriptions all want the same W1Keys keys;
// each message carries one block, from the peers in turn.
func W1(subs int) *Plan {
	blks := Blocks("w1", W1Keys)
	p := &Plan{Blocks: blks, Keys: Keys(blks), PerSub: W1Keys}
	p.SubKeys = make([][]cid.Cid, subs)
	for i := range p.SubKeys {
		p.SubKeys[i] = p.Keys
	}
	p.Msgs = make([]notifier.ResponseMessage, len(blks))
	for i, b := range blks {
		p.Msgs[i] = notifier.ResponseMessage{From: Peer(i), Blocks: []blocks.Block{b}}
	}
	return p
}

// W2 is the disjoint plan: W2Subs subscriptions want W2KeysPer keys each,
// no key wanted twice. The blocks are published in a fixed random order,
// W2Blocks per message; message m also carries HAVEs for the blocks of
// messages m+1 and m+2 and DONT_HAVEs for half of those of message m+3
// (fewer near the end of the round), so every HAVE and DONT_HAVE is for a
// key still wanted and precedes its block, as in bitswap. A message reaches
// about 50 of the 256 subscriptions (see InterestedPerMsg).
func W2() *Plan {
	n := W2Subs * W2KeysPer
	blks := Blocks("w2", n)
	p := &Plan{Blocks: blks, Keys: Keys(blks), PerSub: W2KeysPer}
	p.SubKeys = make([][]cid.Cid, W2Subs)
	for i := range p.SubKeys {
		p.SubKeys[i] = p.Keys[i*W2KeysPer : (i+1)*W2KeysPer]
	}
	order := rand.New(rand.NewPCG(2, 0)).Perm(n)
	p.Msgs = make([]notifier.ResponseMessage, 0, n/W2Blocks)
	p.Msgs = p.appendMsgs(p.Msgs, order, Peer)
	return p
}

// appendMsgs appends the messages that publish the blocks of p at the
// indexes of seq, in that order, W2Blocks per message; message m, from
// from(m), also carries HAVEs for the blocks of messages m+1 and m+2 and
// DONT_HAVEs for half of those of message m+3 (fewer near the end of seq).
// So every key a message names is in seq.
func (p *Plan) appendMsgs(msgs []notifier.ResponseMessage, seq []int, from func(m int) string) []notifier.ResponseMessage {
	n := len(seq)
	at := func(lo, hi int) []int { return seq[min(lo, n):min(hi, n)] }
	for m := range n / W2Blocks {
		lo := m * W2Blocks
		msg := notifier.ResponseMessage{From: from(m)}
		for _, j := range at(lo, lo+W2Blocks) {
			msg.Blocks = append(msg.Blocks, p.Blocks[j])
		}
		lo += W2Blocks
		for _, j := range at(lo, lo+W2Haves) {
			msg.Haves = append(msg.Haves, p.Keys[j])
		}
		lo += W2Haves
		for _, j := range at(lo, lo+W2DontHaves) {
			msg.DontHaves = append(msg.DontHaves, p.Keys[j])
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

// Shape of W6.
const (
	W6Pubs        = 8  // publishers, each with keys of its own
	W6MsgsPerPub  = 32 // messages per publisher per round
	W6KeysPerSub  = W2KeysPer
	w6KeysPerPubl = W6MsgsPerPub * W2Blocks
)

// W6 is the plan of W6, concurrent publishers on a slow store: W2's
// messages (16 blocks, 32 HAVEs, 8 DONT_HAVEs) on W6Pubs publishers whose
// keys are disjoint: publisher j publishes W6MsgsPerPub messages, from
// Peer(j), made as W2 makes its round from a random order of its own keys,
// so its HAVEs and DONT_HAVEs name only its own keys. Subscriptions want
// W6KeysPerSub keys each, drawn from every publisher's keys, so that, as in
// W2, a message reaches several subscriptions and a subscription hears from
// every publisher. Msgs interleaves the publishers: Msgs[i] is publisher
// i%W6Pubs's message i/W6Pubs, so that any number of publishers that divides
// W6Pubs, taking the messages i with i%pubs == g, publishes disjoint keys in
// each publisher's order.
func W6() *Plan {
	n := W6Pubs * w6KeysPerPubl
	blks := Blocks("w6", n)
	p := &Plan{Blocks: blks, Keys: Keys(blks), PerSub: W6KeysPerSub}
	for lo := 0; lo < n; lo += W6KeysPerSub {
		p.SubKeys = append(p.SubKeys, p.Keys[lo:lo+W6KeysPerSub])
	}
	order := rand.New(rand.NewPCG(6, 0)).Perm(n)
	own := make([][]notifier.ResponseMessage, W6Pubs)
	for j := range own {
		from := func(int) string { return Peer(j) }
		own[j] = p.appendMsgs(nil, order[j*w6KeysPerPubl:(j+1)*w6KeysPerPubl], from)
	}
	for i := range W6MsgsPerPub {
		for j := range own {
			p.Msgs = append(p.Msgs, own[j][i])
		}
	}
	return p
}

// InterestedPerMsg returns the mean number of subscriptions that a message
// of the round reaches, replaying the round on a plain model of the wants.
func (p *Plan) InterestedPerMsg() float64 {
	wants := make(map[cid.Cid][]int)
	for i, ks := range p.SubKeys {
		for _, k := range ks {
			wants[k] = append(wants[k], i)
		}
	}
	total := 0
	for _, m := range p.Msgs {
		seen := make(map[int]bool)
		mark := func(k cid.Cid) {
			for _, i := range wants[k] {
				seen[i] = true
			}
		}
		for _, b := range m.Blocks {
			mark(b.Cid())
		}
		for _, k := range slices.Concat(m.Haves, m.DontHaves) {
			mark(k)
		}
		for _, b := range m.Blocks {
			delete(wants, b.Cid())
		}
		total += len(seen)
	}
	return float64(total) / float64(len(p.Msgs))
}
