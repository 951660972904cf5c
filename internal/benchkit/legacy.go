package benchkit

import (
	"context"
	"sync"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// legacyImpl runs a workload on the baseline, called as boxo's bitswap client
// calls its two layers. Each session is a legacy.Session; its consumers are a
// goroutine that drains Updates() for the session's whole life and, per
// Want, a goroutine that drains the GetBlocks channel (the requester). A
// block counts once it has come out of both, so consumer i counts the
// GetBlocks blocks of session i and consumer Subs+i the block keys of its
// Updates.
type legacyImpl struct {
	c     *legacy.Client
	ss    []*legacy.Session
	churn *legacy.Session
	stop  map[cid.Cid]context.CancelFunc // churn requests in flight
	t     *tally
	wg    sync.WaitGroup // consumers
}

// NewLegacy returns the baseline.
func NewLegacy(cfg Config) (Impl, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	x := &legacyImpl{
		c:    legacy.NewClient(cfg.Store.Legacy(), legacy.WithCancelFunc(NoCancel)),
		ss:   make([]*legacy.Session, cfg.Subs),
		stop: make(map[cid.Cid]context.CancelFunc),
		t:    newTally(2*cfg.Subs, cfg.PerSub),
	}
	for i := range x.ss {
		x.ss[i] = x.c.NewSession(uint64(i))
		x.wg.Add(1)
		go x.updates(cfg.Subs+i, x.ss[i].Updates())
	}
	x.churn = x.c.NewSession(uint64(cfg.Subs))
	return x, nil
}

func (x *legacyImpl) updates(i int, ch <-chan legacy.Update) {
	defer x.wg.Done()
	for u := range ch {
		if k := len(u.Blocks); k > 0 {
			x.t.add(i, k)
		}
	}
}

func (x *legacyImpl) request(i int, ch <-chan blocks.Block) {
	defer x.wg.Done()
	for range ch {
		x.t.add(i, 1)
	}
}

func (x *legacyImpl) Want(ctx context.Context, i int, keys []cid.Cid) error {
	ch, err := x.ss[i].GetBlocks(ctx, keys...)
	if err != nil {
		return err
	}
	x.wg.Add(1)
	go x.request(i, ch)
	return nil
}

func (x *legacyImpl) Publish(ctx context.Context, msg *notifier.ResponseMessage) error {
	return x.c.ReceiveMessage(ctx, msg.From, msg.Blocks, msg.Haves, msg.DontHaves)
}

func (x *legacyImpl) Arm()  { x.t.arm() }
func (x *legacyImpl) Wait() { x.t.wait() }

func (x *legacyImpl) Delivered() int64 {
	n := len(x.ss)
	return min(x.t.sum(0, n), x.t.sum(n, 2*n))
}

// Churn wants k with a request of its own and unwants it by cancelling the
// request's context, as a bitswap client does when a request is abandoned.
func (x *legacyImpl) Churn(ctx context.Context, k cid.Cid, on bool) error {
	if !on {
		if stop, ok := x.stop[k]; ok {
			stop()
			delete(x.stop, k)
		}
		return nil
	}
	rctx, stop := context.WithCancel(ctx)
	if _, err := x.churn.GetBlocks(rctx, k); err != nil {
		stop()
		return err
	}
	x.stop[k] = stop
	return nil
}

func (x *legacyImpl) Close() {
	for _, stop := range x.stop {
		stop()
	}
	x.c.Close()
	x.wg.Wait()
}
