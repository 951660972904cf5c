package benchkit

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

// Impl is one implementation under test, with Config.Subs sessions numbered
// from 0 and, for each, the consumers that a client would run: goroutines
// that drain what the implementation hands out and count the blocks.
//
// A workload runs in rounds: Want every session's keys, Arm, publish the
// round's messages, Wait. Want, Arm and Close must not run concurrently with
// anything else; Publish and Delivered are safe for concurrent use.
type Impl interface {
	// Want makes session i want keys, as a client's request does.
	Want(ctx context.Context, i int, keys []cid.Cid) error
	// Publish hands msg to the implementation, as a client does with a
	// received message. It does not modify msg.
	Publish(ctx context.Context, msg *notifier.ResponseMessage) error
	// Arm starts a round: Wait returns once every session's consumers have
	// counted Config.PerSub more blocks.
	Arm()
	// Wait blocks until the armed round has been consumed.
	Wait()
	// Delivered returns how many blocks the consumers have counted so far,
	// all sessions together; a block counts once it has reached everything
	// that the implementation hands a client for it.
	Delivered() int64
	// Close shuts the implementation down and waits for the consumers.
	Close()
}

// Churner is implemented by the Impls that can want and unwant keys on a
// session of their own while other sessions are served (W3's churn).
type Churner interface {
	// Churn makes the churn session want k (on) or stop wanting it (!on).
	// It must not be called concurrently with itself.
	Churn(ctx context.Context, k cid.Cid, on bool) error
}

// Config sizes an Impl.
type Config struct {
	Store  *Store
	Subs   int // sessions
	PerSub int // blocks each session receives per round
	// Buffer is the capacity of a Notifier subscription's Messages() channel
	// (0: notifier.DefaultBufferSize) and of a floor session's channel.
	Buffer int
	Shards int               // notifier.WithShards; 0: the default
	Extra  []notifier.Option // further options of a Notifier, after the above
}

// Maker builds an Impl.
type Maker struct {
	Name string
	New  func(Config) (Impl, error)
}

// Impl names.
const (
	ImplLegacy       = "legacy"        // internal/legacy: today's two-layer design
	ImplNotifier     = "notifier"      // Subscription.Messages(), sized by Config.Buffer
	ImplNotifierFunc = "notifier-func" // NewSubscriptionFunc: synchronous delivery
	ImplFloor        = "floor"         // one map lookup and one buffered send per delivery
	ImplFloorMsg     = "floor-msg"     // the floor sending the Notifier's ResponseMessage (NewFloorMsg)
)

// Makers lists the implementations, the baseline first so that benchstat's
// ratios are against it.
var Makers = []Maker{
	{ImplLegacy, NewLegacy},
	{ImplNotifier, NewNotifier},
	{ImplNotifierFunc, NewNotifierFunc},
	{ImplFloor, NewFloor},
}

// NoCancel is the cancel function given to both the Notifier and the
// baseline: a client sends CANCELs there; here it costs a call.
func NoCancel([]cid.Cid) {}

// counter is one consumer's block count, on a cache line of its own.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

// tally counts blocks per consumer and tells a waiting round when every
// consumer has counted per more.
type tally struct {
	per   int64
	round sync.WaitGroup
	cs    []counter
}

func newTally(consumers, per int) *tally {
	return &tally{per: int64(per), cs: make([]counter, consumers)}
}

// add counts k blocks for consumer i. Each consumer calls it from one
// goroutine at a time.
func (t *tally) add(i int, k int) {
	n := t.cs[i].n.Add(int64(k))
	if t.per == 0 {
		return
	}
	for r := (n-int64(k))/t.per + 1; r <= n/t.per; r++ {
		t.round.Done()
	}
}

func (t *tally) arm()  { t.round.Add(len(t.cs)) }
func (t *tally) wait() { t.round.Wait() }

// sum returns the counts of consumers [lo, hi).
func (t *tally) sum(lo, hi int) int64 {
	var s int64
	for i := lo; i < hi; i++ {
		s += t.cs[i].n.Load()
	}
	return s
}

// WaitDelivered waits until impl has delivered at least n blocks. It polls,
// yielding the processor between checks: use it only where no round
// boundary lets Wait do the job (the last, partial round of W3).
func WaitDelivered(impl Impl, n int64) {
	for impl.Delivered() < n {
		runtime.Gosched()
	}
}

var settleSamples = []metrics.Sample{
	{Name: "/sched/goroutines/runnable:goroutines"},
	{Name: "/sched/goroutines/running:goroutines"},
}

// Settle waits, up to limit, until no goroutine but the caller is running or
// runnable in three reads in a row: the goroutines that an implementation
// started (the baseline's per-request goroutines build their state after
// GetBlocks returns) have finished their setup. It reports whether that
// happened. It returns at once on an idle process. Safe for concurrent use.
func Settle(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	samples := make([]metrics.Sample, len(settleSamples))
	copy(samples, settleSamples)
	for quiet := 0; quiet < 3; {
		metrics.Read(samples)
		if samples[0].Value.Kind() == metrics.KindBad { // Go < 1.26: no such metrics
			runtime.Gosched()
			return false
		}
		if samples[0].Value.Uint64() == 0 && samples[1].Value.Uint64() <= 1 {
			quiet++
			runtime.Gosched()
			continue
		}
		quiet = 0
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
	return true
}

// checkConfig rejects configurations that cannot run.
func checkConfig(cfg Config) error {
	if cfg.Store == nil || cfg.Subs < 0 || cfg.PerSub < 0 || cfg.Buffer < 0 {
		return fmt.Errorf("benchkit: bad config %+v", cfg)
	}
	return nil
}
