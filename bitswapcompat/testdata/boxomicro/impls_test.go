package notifiermicro

// The implementations that micro_test.go's benchmarks drive: boxo's client
// over boxo's layer or over bitswapcompat's (client), and the notifier's own
// API (native). .ci/boxo-micro copies this file beside micro_test.go.

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/ipfs/boxo/bitswap/client/internal/notifications"
	bssim "github.com/ipfs/boxo/bitswap/client/internal/sessioninterestmanager"
	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/bitswapcompat"
)

// --- implementations ----------------------------------------------------------

// impl is one implementation with its sessions and consumers. want, arm and
// close must not run concurrently with anything; publish and delivered may.
type impl interface {
	want(ctx context.Context, i int, keys []cid.Cid) error
	publish(ctx context.Context, m *notifier.ResponseMessage) error
	arm()
	wait()
	delivered() int64
	close()
}

// pubsub and interests are the method sets that boxo's client calls, which
// boxo's packages and bitswapcompat's both have.
type pubsub interface {
	Publish(from peer.ID, blks ...blocks.Block)
	Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block
	Shutdown()
}

type interests interface {
	RecordSessionInterest(ses uint64, ks []cid.Cid)
	RemoveSessionWants(ses uint64, ks []cid.Cid) []cid.Cid
	FilterSessionInterested(ses uint64, ksets ...[]cid.Cid) [][]cid.Cid
	SplitWantedUnwanted(blks []blocks.Block) (wanted, unwanted []blocks.Block)
	InterestedSessions(keySets ...[]cid.Cid) []uint64
	FilterInterests(keySets ...[]cid.Cid) [][]cid.Cid
}

// client drives a pubsub and a session-interest manager as boxo's client
// does. Consumer i counts the blocks of session i's requests, consumer
// subs+i those that session i's queue received.
type client struct {
	notif    pubsub
	sim      interests
	put      func(context.Context, []blocks.Block) error // nil: nobody, or the pubsub, stores
	incoming []chan []cid.Cid
	ctx      context.Context
	cancel   context.CancelFunc
	t        *tally
	wg       sync.WaitGroup
}

func newClient(kind string, bs blockstore.Blockstore, subs, perSub int) *client {
	c := &client{incoming: make([]chan []cid.Cid, subs), t: &tally{per: int64(perSub), cs: make([]counter, 2*subs)}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if kind == implBoxo {
		c.notif, c.sim = notifications.New(false), bssim.New()
		if bs != nil {
			c.put = bs.PutMany
		}
	} else {
		var nbs notifier.Blockstore
		if bs != nil {
			nbs = bs
		}
		c.notif, c.sim = bitswapcompat.NewWithOptions(nbs)
	}
	for i := range c.incoming {
		c.incoming[i] = make(chan []cid.Cid, sessionQueue)
		c.wg.Add(1)
		go c.session(i)
	}
	return c
}

// session is boxo's session goroutine, reduced to what a received block
// costs it here.
func (c *client) session(i int) {
	defer c.wg.Done()
	for ks := range c.incoming[i] {
		if len(ks) > 0 {
			c.sim.RemoveSessionWants(uint64(i), ks)
			c.t.add(len(c.incoming)+i, len(ks))
		}
	}
}

func (c *client) want(_ context.Context, i int, keys []cid.Cid) error {
	promise := c.notif.Subscribe(c.ctx, keys...)
	c.sim.RecordSessionInterest(uint64(i), keys)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for range promise {
			c.t.add(i, 1)
		}
	}()
	return nil
}

func (c *client) publish(ctx context.Context, m *notifier.ResponseMessage) error {
	wanted, _ := c.sim.SplitWantedUnwanted(m.Blocks)
	if c.put != nil && len(wanted) > 0 {
		if err := c.put(ctx, wanted); err != nil {
			return err
		}
	}
	ks := make([]cid.Cid, len(m.Blocks))
	for i, b := range m.Blocks {
		ks[i] = b.Cid()
	}
	// A received bitswap message hands out fresh slices, which
	// FilterInterests may overwrite; the plan's are reused every round.
	f := c.sim.FilterInterests(ks, slices.Clone(m.Haves), slices.Clone(m.DontHaves))
	for _, id := range c.sim.InterestedSessions(f[0], f[1], f[2]) {
		// Session.ReceiveFrom: the HAVEs and DONT_HAVEs go to the session
		// want sender (not modelled), the blocks to the incoming queue.
		if r := c.sim.FilterSessionInterested(id, f[0], f[1], f[2]); len(r[0]) > 0 {
			c.incoming[id] <- r[0]
		}
	}
	c.notif.Publish(peer.ID(m.From), wanted...)
	return nil
}

func (c *client) arm()  { c.t.arm() }
func (c *client) wait() { c.t.wait() }

func (c *client) delivered() int64 {
	n := len(c.incoming)
	return min(c.t.sum(0, n), c.t.sum(n, 2*n))
}

func (c *client) close() {
	c.cancel()
	for _, ch := range c.incoming {
		close(ch)
	}
	c.notif.Shutdown()
	c.wg.Wait()
}

// native is the notifier's own API.
type native struct {
	n    *notifier.Notifier
	subs []*notifier.Subscription
	t    *tally
	wg   sync.WaitGroup
}

func noCancel([]cid.Cid) {}

func newNative(bs blockstore.Blockstore, subs, perSub, buffer int) (*native, error) {
	var nbs notifier.Blockstore
	if bs != nil {
		nbs = bs
	}
	x := &native{
		n:    notifier.New(nbs, notifier.WithCancelFunc(noCancel), notifier.WithBufferSize(buffer)),
		subs: make([]*notifier.Subscription, subs),
		t:    &tally{per: int64(perSub), cs: make([]counter, subs)},
	}
	for i := range x.subs {
		s, err := x.n.NewSubscription(uint64(i))
		if err != nil {
			x.close()
			return nil, err
		}
		x.subs[i] = s
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			for m := range s.Messages() {
				if k := len(m.Blocks); k > 0 {
					x.t.add(i, k)
				}
			}
		}()
	}
	return x, nil
}

func (x *native) want(ctx context.Context, i int, keys []cid.Cid) error {
	return x.subs[i].Subscribe(ctx, keys...)
}

func (x *native) publish(ctx context.Context, m *notifier.ResponseMessage) error {
	return x.n.Publish(ctx, *m)
}

func (x *native) arm()             { x.t.arm() }
func (x *native) wait()            { x.t.wait() }
func (x *native) delivered() int64 { return x.t.sum(0, len(x.t.cs)) }

func (x *native) close() {
	_ = x.n.Close()
	x.wg.Wait()
}

func newImpl(b *testing.B, name string, bs blockstore.Blockstore, p *plan, buffer int) impl {
	if name != implNotifier {
		return newClient(name, bs, len(p.subKeys), p.perSub)
	}
	x, err := newNative(bs, len(p.subKeys), p.perSub, buffer)
	if err != nil {
		b.Fatal(err)
	}
	return x
}
