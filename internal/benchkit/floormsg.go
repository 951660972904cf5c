package benchkit

import (
	"context"
	"fmt"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

// floorMsgImpl is the floor held to the Notifier's API: what it sends per
// (session, key) is a notifier.ResponseMessage (88 bytes) rather than the
// floor's 32-byte delivery, and the blocks of a session's message are a
// slice of their own, which its receiver may keep and modify, as the API
// promises. Everything else is the floor's: PutMany the blocks, one map
// lookup per key, one buffered send per (session, message), a consumer per
// session. It is a diagnostic: what the channel of ResponseMessage costs,
// before anything the Notifier does to keep wants and order.
type floorMsgImpl struct {
	st    *Store
	idx   map[cid.Cid][]int // sessions wanting a key
	chans []chan notifier.ResponseMessage
	built []bool
	t     *tally
	wg    sync.WaitGroup
	// Per Publish, reused: the session's part of the message, by session.
	parts []part
	hit   []int // sessions with a part, in the order first reached
}

// part is what one session gets from a message: its blocks and keys.
type part struct {
	on     bool
	blocks []blocks.Block
	haves  []cid.Cid
	dont   []cid.Cid
}

// NewFloorMsg returns the floor held to the Notifier's API.
func NewFloorMsg(cfg Config) (Impl, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	x := &floorMsgImpl{
		st:    cfg.Store,
		idx:   make(map[cid.Cid][]int),
		chans: make([]chan notifier.ResponseMessage, cfg.Subs),
		built: make([]bool, cfg.Subs),
		t:     newTally(cfg.Subs, cfg.PerSub),
		parts: make([]part, cfg.Subs),
	}
	for i := range x.chans {
		x.chans[i] = make(chan notifier.ResponseMessage, max(cfg.Buffer, floorBuffer))
		x.wg.Add(1)
		go x.consume(i, x.chans[i])
	}
	return x, nil
}

func (x *floorMsgImpl) consume(i int, ch <-chan notifier.ResponseMessage) {
	defer x.wg.Done()
	for m := range ch {
		if k := len(m.Blocks); k > 0 {
			x.t.add(i, k)
		}
	}
}

// Want is the floor's: wants never end, the index is built once.
func (x *floorMsgImpl) Want(_ context.Context, i int, keys []cid.Cid) error {
	if x.built[i] {
		return nil
	}
	x.built[i] = true
	for _, k := range keys {
		x.idx[k] = append(x.idx[k], i)
	}
	return nil
}

func (x *floorMsgImpl) Publish(ctx context.Context, msg *notifier.ResponseMessage) error {
	if err := x.st.PutMany(ctx, msg.Blocks); err != nil {
		return fmt.Errorf("floor-msg: %w", err)
	}
	// A one-block message, W1's, takes one array for all its sessions.
	if len(msg.Blocks) == 1 && len(msg.Haves) == 0 && len(msg.DontHaves) == 0 {
		b := msg.Blocks[0]
		subs := x.idx[b.Cid()]
		arr := make([]blocks.Block, len(subs))
		for j, i := range subs {
			arr[j] = b
			x.chans[i] <- notifier.ResponseMessage{From: msg.From, Blocks: arr[j : j+1 : j+1]}
		}
		return nil
	}
	for _, b := range msg.Blocks {
		for _, i := range x.idx[b.Cid()] {
			p := x.reach(i)
			p.blocks = append(p.blocks, b)
		}
	}
	for _, k := range msg.Haves {
		for _, i := range x.idx[k] {
			p := x.reach(i)
			p.haves = append(p.haves, k)
		}
	}
	for _, k := range msg.DontHaves {
		for _, i := range x.idx[k] {
			p := x.reach(i)
			p.dont = append(p.dont, k)
		}
	}
	for _, i := range x.hit {
		p := &x.parts[i]
		x.chans[i] <- notifier.ResponseMessage{From: msg.From, Blocks: p.blocks, Haves: p.haves, DontHaves: p.dont}
		*p = part{}
	}
	x.hit = x.hit[:0]
	return nil
}

// reach returns session i's part of the message being published.
func (x *floorMsgImpl) reach(i int) *part {
	p := &x.parts[i]
	if !p.on {
		p.on = true
		x.hit = append(x.hit, i)
	}
	return p
}

func (x *floorMsgImpl) Arm()             { x.t.arm() }
func (x *floorMsgImpl) Wait()            { x.t.wait() }
func (x *floorMsgImpl) Delivered() int64 { return x.t.sum(0, len(x.t.cs)) }

func (x *floorMsgImpl) Close() {
	for _, ch := range x.chans {
		close(ch)
	}
	x.wg.Wait()
}
