package benchkit

import (
	"context"
	"sync"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

// notifierImpl runs a workload on the Notifier. Each session is a
// Subscription; a consumer goroutine per subscription drains Messages(), or,
// for the func variant, the delivery function counts.
type notifierImpl struct {
	n     *notifier.Notifier
	subs  []*notifier.Subscription
	churn *notifier.Subscription
	t     *tally
	wg    sync.WaitGroup // consumers
}

// Options returns the Notifier options for cfg: the no-op cancel function,
// the buffer and shard counts if set, and cfg.Extra.
func Options(cfg Config) []notifier.Option {
	opts := []notifier.Option{notifier.WithCancelFunc(NoCancel)}
	if cfg.Buffer > 0 {
		opts = append(opts, notifier.WithBufferSize(cfg.Buffer))
	}
	if cfg.Shards > 0 {
		opts = append(opts, notifier.WithShards(cfg.Shards))
	}
	return append(opts, cfg.Extra...)
}

// NewNotifier returns the Notifier, consumed through Messages().
func NewNotifier(cfg Config) (Impl, error) { return newNotifier(cfg, false) }

// NewNotifierFunc returns the Notifier, consumed through NewSubscriptionFunc.
func NewNotifierFunc(cfg Config) (Impl, error) { return newNotifier(cfg, true) }

func newNotifier(cfg Config, fn bool) (Impl, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	x := &notifierImpl{
		n:    notifier.New(cfg.Store.Notifier(), Options(cfg)...),
		subs: make([]*notifier.Subscription, cfg.Subs),
		t:    newTally(cfg.Subs, cfg.PerSub),
	}
	for i := range x.subs {
		var err error
		if fn {
			x.subs[i], err = x.n.NewSubscriptionFunc(uint64(i), func(m notifier.ResponseMessage) {
				if k := len(m.Blocks); k > 0 {
					x.t.add(i, k)
				}
			})
		} else {
			x.subs[i], err = x.n.NewSubscription(uint64(i))
		}
		if err != nil {
			x.Close()
			return nil, err
		}
		if !fn {
			x.wg.Add(1)
			go x.consume(i, x.subs[i].Messages())
		}
	}
	var err error
	if x.churn, err = x.n.NewSubscription(uint64(cfg.Subs)); err != nil {
		x.Close()
		return nil, err
	}
	return x, nil
}

func (x *notifierImpl) consume(i int, ch <-chan notifier.ResponseMessage) {
	defer x.wg.Done()
	for m := range ch {
		if k := len(m.Blocks); k > 0 {
			x.t.add(i, k)
		}
	}
}

func (x *notifierImpl) Want(ctx context.Context, i int, keys []cid.Cid) error {
	return x.subs[i].Subscribe(ctx, keys...)
}

func (x *notifierImpl) Publish(ctx context.Context, msg *notifier.ResponseMessage) error {
	return x.n.Publish(ctx, *msg)
}

func (x *notifierImpl) Arm()             { x.t.arm() }
func (x *notifierImpl) Wait()            { x.t.wait() }
func (x *notifierImpl) Delivered() int64 { return x.t.sum(0, len(x.t.cs)) }

func (x *notifierImpl) Churn(ctx context.Context, k cid.Cid, on bool) error {
	if on {
		return x.churn.Subscribe(ctx, k)
	}
	x.churn.Unsubscribe(k)
	return nil
}

func (x *notifierImpl) Close() {
	_ = x.n.Close() // always nil
	x.wg.Wait()
}
