package notifier

import (
	"context"
	"sync/atomic"

	metrics "github.com/ipfs/go-metrics-interface"

	"github.com/bitswapsync/notifier/internal/waitmu"
)

// This file holds the Notifier's metrics. The hooks that feed them, and the
// logs and trace events, are in observe.go.

// WithMetrics makes the Notifier register its metrics, through
// go-metrics-interface, under the scope that ctx carries plus a "notifier"
// sub-scope, as boxo's bitswap does with its own: in kubo, whose root scope is
// "ipfs" and whose bitswap adds "bitswap", a client's ctx gives names such as
// ipfs_bitswap_notifier_wants in Prometheus. README.md lists them.
//
// The metrics are created when New runs, through the implementation injected
// into go-metrics-interface then (go-metrics-prometheus in a node); with none
// injected, or without this option, nothing is registered and the operations
// skip the bookkeeping (one nil check each). Two Notifiers given the same
// scope share the metrics if the binding allows it (go-metrics-prometheus
// does): the counters and gauges then show their sums. WithMetrics panics on a nil ctx. Only ctx's values are used.
func WithMetrics(ctx context.Context) Option {
	if ctx == nil {
		panic("notifier: WithMetrics(nil): want the context that carries the metrics scope")
	}
	return func(c *config) { c.metrics = metrics.CtxSubScope(ctx, "notifier") }
}

// durationBuckets, in seconds, extend the buckets of boxo's bitswap
// networks (0.05 s up) down to 10 µs: a Publish on an in-memory store takes
// tens of microseconds, one that waits for a disk milliseconds.
var durationBuckets = []float64{
	10e-6, 50e-6, 100e-6, 500e-6, 1e-3, 5e-3, 0.01,
	0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10,
}

// Names and help texts of the metrics, relative to the scope of WithMetrics.
const (
	mSubscriptions = "subscriptions"
	mKeys          = "wanted_keys"
	mWants         = "wants"
	mStored        = "blocks_stored_total"
	mDelivered     = "blocks_delivered_total"
	mUnsolicited   = "blocks_unsolicited_total"
	mCancels       = "cancels_total"
	mSlow          = "slow_consumers_total"
	mBSErrors      = "blockstore_errors_total"
	mPublish       = "publish_seconds"
	mPublishBS     = "publish_blockstore_seconds"
	mSubscribe     = "subscribe_seconds"
	mSubscribeBS   = "subscribe_blockstore_seconds"
)

// meters holds the Notifier's metrics; a nil *meters records nothing.
type meters struct {
	subs, keys, wants metrics.Gauge // Stats, see refresh

	stored, delivered, unsolicited metrics.Counter
	cancels, slow, bsErrors        metrics.Counter

	publish, publishBS, subscribe, subscribeBS metrics.Histogram

	// dirty: some operation changed the index since the gauges were last set
	// from Stats; see refresh.
	dirty atomic.Bool
	// mu is held while the gauges are set from Stats; TryLock takes it, but
	// for Close's settle, which waits for it (Lock).
	// A leaf: it is taken holding no other lock.
	mu waitmu.Mutex
	// added is what this Notifier has added to the gauges so far (under mu):
	// its last Stats. The gauges are shared with every other Notifier given
	// the same scope (two clients of one process), so each adds the change
	// of its own Stats instead of setting them. Found by review, with
	// TestMetrics_GaugesOfNotifiersSharingAScopeAreSums.
	added [3]int
}

// newMeters creates the metrics in the scope of ctx, or returns nil if ctx is
// nil (no WithMetrics) or no implementation of go-metrics-interface is
// injected, in which case every metric would be a no-op.
func newMeters(ctx context.Context) *meters {
	if ctx == nil || !metrics.Active() {
		return nil
	}
	gauge := func(name, help string) metrics.Gauge { return metrics.NewCtx(ctx, name, help).Gauge() }
	counter := func(name, help string) metrics.Counter { return metrics.NewCtx(ctx, name, help).Counter() }
	hist := func(name, help string) metrics.Histogram {
		return metrics.NewCtx(ctx, name, help).Histogram(durationBuckets)
	}
	return &meters{
		subs:  gauge(mSubscriptions, "Live subscriptions of the notifier."),
		keys:  gauge(mKeys, "Distinct keys wanted by at least one subscription."),
		wants: gauge(mWants, "Wants: (subscription, key) pairs."),

		stored:      counter(mStored, "Blocks stored in the blockstore by Publish."),
		delivered:   counter(mDelivered, "Blocks handed to subscriptions, once per subscription (those a slow consumer's end then drops included), and blocks that Fetch returned."),
		unsolicited: counter(mUnsolicited, "Blocks from remote peers refused (neither stored nor delivered): no subscription wanted them."),
		cancels:     counter(mCancels, "Keys whose last want ended (the keys for CANCELs), whether or not a cancel function is set."),
		slow:        counter(mSlow, "Subscriptions ended as slow consumers (past WithMaxPending)."),
		bsErrors:    counter(mBSErrors, "Blockstore errors of Publish (PutMany) and Subscribe (Get), returned or taken for a miss (WithFailedCheckAsMiss)."),

		publish:     hist(mPublish, "Time inside Publish, blockstore included, in seconds."),
		publishBS:   hist(mPublishBS, "Time Publish spends in the blockstore's PutMany, in seconds."),
		subscribe:   hist(mSubscribe, "Time inside Subscribe, blockstore included, in seconds."),
		subscribeBS: hist(mSubscribeBS, "Time Subscribe spends checking the blockstore (Get), in seconds."),
	}
}

// refresh brings n's part of the gauges to n.Stats(); a nil m does nothing. Every
// operation that may have changed the index or the subscriptions calls it
// once it holds no lock.
//
// Why this rather than a gauge updated where the index's counters change:
// those counters are sharded so that operations on different keys touch
// different cache lines; a gauge beside each of them would make every want
// that starts or ends write one shared line, inside the shard locks. Stats
// costs a read of two counters per shard, outside every lock, once per
// operation, and only with metrics.
//
// Bringing a gauge to a snapshot is correct only if the last snapshot used is
// one taken after the last change: two operations that used their snapshots in
// the other order would leave an old value for good. So the snapshots are
// taken and used under mu, and an operation that finds mu held leaves its
// change to the holder: it marks the gauges dirty before TryLock, and the
// holder, after unlocking, starts over while they are dirty. (The mark
// precedes the failed TryLock, which precedes the holder's unlock and its
// look at the mark, so the holder sees it, or another refresh that cleared
// it reads Stats after it.) Concurrent operations thus take one snapshot at a
// time between them instead of one each; once they stop, n's part of the
// gauges equals Stats (the whole gauges, if n is alone in its scope).
func (m *meters) refresh(n *Notifier) {
	if m == nil {
		return
	}
	m.dirty.Store(true)
	m.catchUp(n)
}

// catchUp brings the gauges to Stats while they are dirty and mu is free.
func (m *meters) catchUp(n *Notifier) {
	for m.dirty.Load() && m.mu.TryLock() {
		m.dirty.Store(false)
		m.bring(n)
		m.mu.Unlock()
	}
}

// bring brings n's part of the gauges to a snapshot of Stats. The caller
// holds mu.
func (m *meters) bring(n *Notifier) {
	st := n.Stats()
	gauges := [3]metrics.Gauge{m.subs, m.keys, m.wants}
	for i, v := range [3]int{st.Subscriptions, st.Keys, st.Wants} {
		if d := v - m.added[i]; d != 0 {
			gauges[i].Add(float64(d))
			m.added[i] = v
		}
	}
}

// settle is Close's refresh: where refresh leaves its change to a refresh in
// progress, settle waits for it, so that when Close returns the gauges equal
// Stats, whatever operations are still returning. (With refresh, Close
// returned with the gauges of a snapshot that such an operation took before
// Close ended everything, until that operation caught up; found by review,
// with TestMetrics_GaugesAreFinalWhenCloseReturns.) A snapshot taken after
// the last end is final: nothing is added once Close has begun.
func (m *meters) settle(n *Notifier) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.dirty.Store(false)
	m.bring(n)
	m.mu.Unlock()
	m.catchUp(n) // a refresh that found mu held meanwhile left its change to us
}
