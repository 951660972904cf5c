package notifier

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	metrics "github.com/ipfs/go-metrics-interface"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
	"github.com/bitswapsync/notifier/internal/waitmu"
)

// kuboScope is the scope that kubo's bitswap client hands its parts: kubo's
// root "ipfs", then bitswap.New's "bitswap".
func kuboScope() context.Context {
	return metrics.CtxSubScope(metrics.CtxScope(context.Background(), "ipfs"), "bitswap")
}

const promPrefix = "ipfs_bitswap_notifier_"

// exposition returns the Prometheus text of a counter or gauge.
func exposition(typ, name, help string, v float64) string {
	return fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
}

// histogram returns the family name from reg, failing if it is not a
// histogram with help.
func histogram(t *testing.T, reg *prometheus.Registry, name, help string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Equal(t, dto.MetricType_HISTOGRAM, mf.GetType(), name)
			require.Equal(t, help, mf.GetHelp(), name)
			require.Len(t, mf.GetMetric(), 1, name)
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func TestMetrics_WorkloadAsPrometheusShowsIt(t *testing.T) {
	reg := promtest.Registry(t)
	bs := &hookStore{Blockstore: memStore()}
	n, cancels := newWithCancels(t, bs, WithMetrics(kuboScope()), WithBufferSize(1), WithMaxPending(1))
	ctx := context.Background()
	b := mkBlocks("metrics", 8)
	k := keysOf(b)

	sb := deliveriesOfTheWorkload(t, ctx, n, b)
	ops := workloadOps{publishes: 4, subscribes: 4} // Fetch counts as a Subscribe
	slowConsumerOfTheWorkload(t, ctx, n, k, &ops)
	blockstoreErrorsOfTheWorkload(t, ctx, n, bs, sb, b, &ops)

	require.ElementsMatch(t, []cid.Cid{k[0], k[2], k[1], k[6]}, cancels.take())
	require.Equal(t, Stats{Subscriptions: 3, Keys: 1, Wants: 1}, n.Stats()) // sb wants k[3]
	requireWorkloadCountersAndGauges(t, reg)
	requireWorkloadHistograms(t, reg, ops)
}

// workloadOps counts the Publishes and Subscribes of the workload, which
// the histograms must have timed.
type workloadOps struct{ publishes, subscribes int }

// deliveriesOfTheWorkload makes subscriptions A (1), B (2) and C (3), and
// delivers to them remote and local blocks, stored ones and HAVEs; Fetch
// returns a stored block. It returns B, which still wants k[3]: 4
// Publishes, 4 Subscribes (the Fetch counted).
func deliveriesOfTheWorkload(t *testing.T, ctx context.Context, n *Notifier, b []blocks.Block) *Subscription {
	t.Helper()
	k := keysOf(b)
	a, sb := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, a.Subscribe(ctx, k[0], k[1], k[2]))
	require.NoError(t, sb.Subscribe(ctx, k[2], k[3]))
	// A remote block wanted, one unsolicited, a HAVE: A gets one message.
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[0:1], Haves: k[1:2]}))
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Blocks: b[7:8]}))
	recv(t, a)
	require.NoError(t, n.Publish(ctx, ResponseMessage{Blocks: b[5:6]})) // local: stored, wanted by nobody
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer2", Blocks: b[2:3]}))
	recv(t, a)
	recv(t, sb)
	c := mustSub(t, n, 3)
	require.NoError(t, c.Subscribe(ctx, k[5])) // found in the store: handed to c alone
	recv(t, c)
	blk, req, err := n.Fetch(ctx, k[5], nil) // found, and wanted by nobody: returned, a delivery
	require.NoError(t, err)
	require.Nil(t, req)
	require.Equal(t, b[5], blk)
	a.Unsubscribe(k[1])
	return sb
}

// slowConsumerOfTheWorkload ends a subscription that never reads as a slow
// consumer, counting its Subscribe and the Publishes it took in ops.
func slowConsumerOfTheWorkload(t *testing.T, ctx context.Context, n *Notifier, k []cid.Cid, ops *workloadOps) {
	t.Helper()
	// A subscription that never reads: past its buffer (1) and backlog (1)
	// it is ended. When the drain goroutine takes the second message from the
	// backlog varies, so publish until it is ended.
	d := mustSub(t, n, 4)
	require.NoError(t, d.Subscribe(ctx, k[6]))
	ops.subscribes++
	for i := 0; d.Err() == nil; i++ {
		require.Less(t, i, 10, "not ended as a slow consumer")
		require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: k[6:7]}))
		ops.publishes++
	}
	require.ErrorIs(t, d.Err(), ErrSlowConsumer)
}

// blockstoreErrorsOfTheWorkload makes bs fail a Publish's PutMany and then
// sb's Subscribe's Get, counting both in ops.
func blockstoreErrorsOfTheWorkload(t *testing.T, ctx context.Context, n *Notifier, bs *hookStore, sb *Subscription, b []blocks.Block, ops *workloadOps) {
	t.Helper()
	k := keysOf(b)
	bs.onPutMany = func([]blocks.Block) error { return errBoom }
	require.ErrorIs(t, n.Publish(ctx, ResponseMessage{Blocks: b[4:5]}), errBoom)
	ops.publishes++
	bs.onPutMany = nil
	bs.onGet = func(cid.Cid) error { return errBoom }
	require.ErrorIs(t, sb.Subscribe(ctx, k[4]), errBoom)
	ops.subscribes++
	bs.onGet = nil
}

// requireWorkloadCountersAndGauges checks reg's Prometheus text of the
// counters and gauges after the workload.
func requireWorkloadCountersAndGauges(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	want := exposition("gauge", promPrefix+"subscriptions", "Live subscriptions of the notifier.", 3) +
		exposition("gauge", promPrefix+"wanted_keys", "Distinct keys wanted by at least one subscription.", 1) +
		exposition("gauge", promPrefix+"wants", "Wants: (subscription, key) pairs.", 1) +
		exposition("counter", promPrefix+"blocks_stored_total", "Blocks stored in the blockstore by Publish.", 3) +
		exposition("counter", promPrefix+"blocks_delivered_total", "Blocks handed to subscriptions, once per subscription (those a slow consumer's end then drops included), and blocks that Fetch returned.", 5) +
		exposition("counter", promPrefix+"blocks_unsolicited_total", "Blocks from remote peers refused (neither stored nor delivered): no subscription wanted them.", 1) +
		exposition("counter", promPrefix+"cancels_total", "Keys whose last want ended (the keys for CANCELs), whether or not a cancel function is set.", 4) +
		exposition("counter", promPrefix+"slow_consumers_total", "Subscriptions ended as slow consumers (past WithMaxPending).", 1) +
		exposition("counter", promPrefix+"blockstore_errors_total", "Blockstore errors of Publish (PutMany) and Subscribe (Get), returned or taken for a miss (WithFailedCheckAsMiss).", 2)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		promPrefix+"subscriptions", promPrefix+"wanted_keys", promPrefix+"wants",
		promPrefix+"blocks_stored_total", promPrefix+"blocks_delivered_total", promPrefix+"blocks_unsolicited_total",
		promPrefix+"cancels_total", promPrefix+"slow_consumers_total", promPrefix+"blockstore_errors_total"))
}

// requireWorkloadHistograms checks reg's four histograms of durations: as
// many samples as ops counted, a positive sum, and durationBuckets.
func requireWorkloadHistograms(t *testing.T, reg *prometheus.Registry, ops workloadOps) {
	t.Helper()
	for _, h := range []struct {
		name, help string
		count      int
	}{
		{"publish_seconds", "Time inside Publish, blockstore included, in seconds.", ops.publishes},
		{"publish_blockstore_seconds", "Time Publish spends in the blockstore's PutMany, in seconds.", 4}, // b0, b5, b2, the failed b4
		{"subscribe_seconds", "Time inside Subscribe, blockstore included, in seconds.", ops.subscribes},
		{"subscribe_blockstore_seconds", "Time Subscribe spends checking the blockstore (Get), in seconds.", ops.subscribes},
	} {
		got := histogram(t, reg, promPrefix+h.name, h.help)
		require.EqualValues(t, h.count, got.GetSampleCount(), h.name)
		require.Positive(t, got.GetSampleSum(), h.name)
		bounds := make([]float64, 0, len(got.GetBucket()))
		for _, bk := range got.GetBucket() {
			bounds = append(bounds, bk.GetUpperBound())
		}
		require.Equal(t, durationBuckets, bounds, h.name)
	}
}

// The gauges are set from snapshots; after concurrent operations stop they
// must equal Stats, whatever order the snapshots were set in.
func TestMetrics_GaugesEqualStatsAfterConcurrentOperations(t *testing.T) {
	reg := promtest.Registry(t)
	n := New(nil, WithMetrics(kuboScope()), WithShards(4)) // notify only: a Subscribe finds nothing stored
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	ctx := context.Background()
	blks := mkBlocks("gauges", 64)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 300 {
				s, err := n.NewSubscriptionFunc(uint64(w*1000+i), nil)
				if err != nil {
					t.Error(err)
					return
				}
				for range 4 {
					b := blks[rng.IntN(len(blks))]
					switch rng.IntN(3) {
					case 0:
						_ = s.Subscribe(ctx, b.Cid())
					case 1:
						_ = n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}})
					default:
						s.Unsubscribe(b.Cid())
					}
				}
				if rng.IntN(2) == 0 {
					s.Remove()
				}
			}
		})
	}
	wg.Wait()
	st := n.Stats()
	require.Positive(t, st.Wants)
	gauge := func(name string) int {
		return int(gaugeValue(t, reg, promPrefix+name))
	}
	require.Equal(t, st, Stats{Subscriptions: gauge("subscriptions"), Keys: gauge("wanted_keys"), Wants: gauge("wants")})

	require.NoError(t, n.Close())
	require.Equal(t, Stats{}, Stats{Subscriptions: gauge("subscriptions"), Keys: gauge("wanted_keys"), Wants: gauge("wants")})
}

// Two Notifiers given one scope (two clients of one process) share the
// gauges, as go-metrics-prometheus shares a name: the gauges show the sums
// of their Stats, also as each closes. When each set the gauges to its own
// Stats, they showed whichever had refreshed last. Found by review.
func TestMetrics_GaugesOfNotifiersSharingAScopeAreSums(t *testing.T) {
	reg := promtest.Registry(t)
	ctx := context.Background()
	n1 := New(nil, WithMetrics(kuboScope()))
	n2 := New(nil, WithMetrics(kuboScope()))
	blks := mkBlocks("shared-scope", 5)
	s1, err := n1.NewSubscription(1)
	require.NoError(t, err)
	require.NoError(t, s1.Subscribe(ctx, blks[0].Cid()))
	for id := range uint64(2) {
		s, err := n2.NewSubscription(id)
		require.NoError(t, err)
		require.NoError(t, s.Subscribe(ctx, keysOf(blks[1:4])...))
	}
	st1, st2 := n1.Stats(), n2.Stats()
	require.Equal(t, Stats{Subscriptions: 1, Keys: 1, Wants: 1}, st1)
	require.Equal(t, Stats{Subscriptions: 2, Keys: 3, Wants: 6}, st2)
	require.Equal(t, Stats{Subscriptions: 3, Keys: 4, Wants: 7}, gaugeStats(t, reg), "the gauges are not the sums of the two Notifiers' Stats")

	require.NoError(t, n1.Publish(ctx, ResponseMessage{From: "p", Blocks: blks[:1]})) // ends n1's one want
	require.Equal(t, Stats{Subscriptions: 3, Keys: 3, Wants: 6}, gaugeStats(t, reg))
	require.NoError(t, n2.Close())
	require.Equal(t, n1.Stats(), gaugeStats(t, reg), "after one closed, the gauges are not the other's Stats")
	require.NoError(t, n1.Close())
	require.Equal(t, Stats{}, gaugeStats(t, reg))
}

// gaugeStats returns the three gauges of reg as a Stats.
func gaugeStats(t *testing.T, reg *prometheus.Registry) Stats {
	t.Helper()
	g := func(name string) int { return int(gaugeValue(t, reg, promPrefix+name)) }
	return Stats{Subscriptions: g("subscriptions"), Keys: g("wanted_keys"), Wants: g("wants")}
}

// gaugeValue returns the value of the gauge name in reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Equal(t, dto.MetricType_GAUGE, mf.GetType(), name)
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestMetrics_NothingRegisteredWithoutTheOption(t *testing.T) {
	reg := promtest.Registry(t)
	n := New(memStore())
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	s := mustSub(t, n, 1)
	b := mkBlocks("none", 1)[0]
	require.NoError(t, s.Subscribe(context.Background(), b.Cid()))
	require.NoError(t, n.Publish(context.Background(), ResponseMessage{From: "p", Blocks: []blocks.Block{b}}))
	recv(t, s)
	n.m.refresh(n) // a nil *meters is a no-op
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Empty(t, mfs)
	require.Nil(t, n.m)
}

func TestMetrics_WithMetricsPanicsOnNilContext(t *testing.T) {
	require.PanicsWithValue(t, "notifier: WithMetrics(nil): want the context that carries the metrics scope", func() {
		WithMetrics(nil) //nolint:staticcheck // the point of the test
	})
}

// gateGauge is a gauge whose next Add, once gate is set, says so on entered
// and waits for the gate to close.
type gateGauge struct {
	prometheus.Gauge
	gate    atomic.Pointer[chan struct{}]
	entered chan struct{}
}

func (g *gateGauge) Add(v float64) {
	if c := g.gate.Swap(nil); c != nil {
		g.entered <- struct{}{}
		<-*c
	}
	g.Gauge.Add(v)
}

// A refresh that finds another under way leaves its change to it, and the
// holder starts over while the gauges are dirty, so that once the operations
// stop the gauges equal Stats. Here a Subscribe's refresh is parked in the
// middle of bringing the gauges to its snapshot; a Publish then ends a want,
// and its refresh finds the gauges busy. (A holder that did not start over
// left the gauges at its older snapshot until some later operation.)
func TestMetrics_RefreshThatFindsAnotherUnderWayIsTakenUp(t *testing.T) {
	reg := promtest.Registry(t)
	keys := &gateGauge{Gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: promPrefix + "wanted_keys", Help: "Distinct keys wanted by at least one subscription."}), entered: make(chan struct{}, 1)}
	reg.MustRegister(keys)
	n := New(nil, WithMetrics(kuboScope()))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b := mkBlocks("gauges-busy", 2)
	s1, s2 := mustSub(t, n, 1), mustSub(t, n, 2)
	require.NoError(t, s1.Subscribe(ctx, b[0].Cid()))
	require.Equal(t, Stats{2, 1, 1}, gaugeStats(t, reg))

	gate := make(chan struct{})
	keys.gate.Store(&gate)
	subscribed := make(chan error, 1)
	go func() { subscribed <- s2.Subscribe(ctx, b[1].Cid()) }()
	<-keys.entered // its refresh holds the gauges, bringing them to Stats{2, 2, 2}
	require.NoError(t, n.Publish(ctx, ResponseMessage{From: "p", Blocks: b[:1]}))
	require.Equal(t, Stats{2, 1, 1}, n.Stats(), "the Publish ended s1's want")
	close(gate)
	require.NoError(t, <-subscribed)
	require.Equal(t, n.Stats(), gaugeStats(t, reg), "the Subscribe's refresh took up the Publish's change")
}

// When Close returns, the gauges equal Stats, though an operation that is
// still returning is in the middle of its own refresh, from a snapshot taken
// before Close ended everything: Close waits for that refresh and brings the
// gauges to Stats after it. (Close used to leave its change to that refresh,
// so the gauges stayed at the older snapshot until the operation caught up.)
// Found by review.
func TestMetrics_GaugesAreFinalWhenCloseReturns(t *testing.T) {
	reg := promtest.Registry(t)
	keys := &gateGauge{Gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: promPrefix + "wanted_keys", Help: "Distinct keys wanted by at least one subscription."}), entered: make(chan struct{}, 1)}
	reg.MustRegister(keys)
	n := New(nil, WithMetrics(kuboScope()))
	b := mkBlocks("gauges-final", 1)[0]
	s := mustSub(t, n, 1)
	require.NoError(t, s.Subscribe(ctx, b.Cid()))
	require.Equal(t, Stats{1, 1, 1}, gaugeStats(t, reg))

	gate := make(chan struct{})
	keys.gate.Store(&gate)
	published := make(chan error, 1)
	go func() { published <- n.Publish(ctx, ResponseMessage{From: "p", Blocks: []blocks.Block{b}}) }()
	<-keys.entered // the Publish has delivered, and brings the gauges to its snapshot, Stats{1, 0, 0}
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	var got Stats
	for deadline := time.Now().Add(hang); ; runtime.Gosched() {
		require.True(t, time.Now().Before(deadline), "Close neither returned nor waited")
		select {
		case err := <-closed: // returned without waiting for the refresh
			require.NoError(t, err)
			got = gaugeStats(t, reg)
		default:
			if waitmu.Waiting(&n.m.mu) == 0 { // settle's
				continue
			}
			close(gate) // Close waits for that refresh: let it go
			require.NoError(t, <-closed)
			got = gaugeStats(t, reg)
			gate = nil
		}
		break
	}
	require.Equal(t, Stats{}, n.Stats())
	require.Equal(t, Stats{}, got, "the gauges when Close returned")
	if gate != nil {
		close(gate)
	}
	require.NoError(t, <-published)
	require.Equal(t, Stats{}, gaugeStats(t, reg))
}
