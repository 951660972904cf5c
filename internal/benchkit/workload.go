package benchkit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// Reset prepares a new round of p on impl: it deletes the round's blocks from
// the store, so that wanting them again finds nothing, and makes every
// session want its keys again.
func (p *Plan) Reset(ctx context.Context, st *Store, impl Impl) error {
	if err := st.Delete(ctx, p.Keys); err != nil {
		return err
	}
	for i, ks := range p.SubKeys {
		if err := impl.Want(ctx, i, ks); err != nil {
			return fmt.Errorf("benchkit: want session %d: %w", i, err)
		}
	}
	return nil
}

// Churn runs a goroutine that alternately makes c want the next of keys and
// stops wanting it, rate operations a second on average, until the returned
// stop is called; stop returns the operations done and the time they took.
// Operation i is due i/rate seconds after the start: a goroutine that was
// kept from running catches up, so that the load is the rate asked for
// whatever the scheduler does. keys must never be published.
func Churn(ctx context.Context, c Churner, keys []cid.Cid, rate int) (stop func() (ops int, took time.Duration), err error) {
	if len(keys) == 0 || rate <= 0 {
		return nil, errors.New("benchkit: churn needs keys and a positive rate")
	}
	quit := make(chan struct{})
	var (
		wg   sync.WaitGroup
		ops  int
		cerr error
	)
	period := time.Second / time.Duration(rate)
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(period)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			for due := time.Since(start) / period; time.Duration(ops) < due; ops++ {
				select {
				case <-quit:
					return
				default:
				}
				if err := c.Churn(ctx, keys[(ops/2)%len(keys)], ops%2 == 0); err != nil {
					cerr = err
					return
				}
			}
			t.Reset(time.Duration(ops+1)*period - time.Since(start))
		}
	}()
	return func() (int, time.Duration) {
		close(quit)
		wg.Wait()
		if cerr != nil {
			panic(fmt.Sprintf("benchkit: churn: %v", cerr))
		}
		return ops, time.Since(start)
	}, nil
}

// Built is an index of wants built for W5, ready to be measured and torn down.
type Built struct{ close func() }

// Close tears the index down.
func (b *Built) Close() { b.close() }

// BuildNotifier makes len(subKeys) subscriptions, subscription i wanting
// subKeys[i], with nothing consuming their messages (none arrive).
func BuildNotifier(ctx context.Context, st *Store, subKeys [][]cid.Cid) (*Built, error) {
	n := notifier.New(st.Notifier(), notifier.WithCancelFunc(NoCancel))
	for i, ks := range subKeys {
		s, err := n.NewSubscription(uint64(i))
		if err == nil {
			err = s.Subscribe(ctx, ks...)
		}
		if err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	return &Built{close: func() { _ = n.Close() }}, nil
}

// BuildLegacy makes len(subKeys) sessions of the baseline, session i with one
// GetBlocks request for subKeys[i]. Nothing arrives, so nothing needs
// draining.
func BuildLegacy(ctx context.Context, st *Store, subKeys [][]cid.Cid) (*Built, error) {
	c := legacy.NewClient(st.Legacy(), legacy.WithCancelFunc(NoCancel))
	rctx, stop := context.WithCancel(ctx)
	ss := make([]*legacy.Session, len(subKeys))
	for i, ks := range subKeys {
		ss[i] = c.NewSession(uint64(i))
		if _, err := ss[i].GetBlocks(rctx, ks...); err != nil {
			stop()
			c.Close()
			return nil, err
		}
	}
	// The PubSub's goroutine takes subscriptions one at a time from an
	// unbuffered channel: a Publish returns only once the last one is
	// being applied; the block is stored by nobody's request (StoreNone
	// stores nothing).
	if err := c.ReceiveMessage(ctx, "", Blocks("w5-sync", 1), nil, nil); err != nil {
		stop()
		c.Close()
		return nil, err
	}
	return &Built{close: func() {
		// Ending the wants first keeps Close's RemoveSession, which scans
		// every wanted key, from costing Subs x keys.
		for i, s := range ss {
			s.CancelWants(subKeys[i]...)
		}
		stop()
		c.Close()
	}}, nil
}
