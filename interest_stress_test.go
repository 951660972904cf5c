package notifier

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Interest subscriptions under concurrency. Each test is bounded by both an
// iteration count and a deadline, and checks a law that a wrong report would
// break.

const (
	stressFor   = 300 * time.Millisecond
	stressIters = 20000
	stressMin   = 100 // iterations run whatever the deadline
)

// stressing reports whether iteration i of a stress loop runs.
func stressing(i int, deadline time.Time) bool {
	return i < stressMin || (i < stressIters && time.Now().Before(deadline))
}

// interestModel is what the serialised stress test expects: how many
// interest subscriptions hold each key, and how often each key went from no
// interest to interest (rises) and back (reports).
type interestModel struct {
	mu      sync.Mutex // held across each call of the Notifier and the model's update
	holders map[cid.Cid]int
	rises   map[cid.Cid]int
	reports map[cid.Cid]int
}

// subscribe records that s, which holds held, subscribes keys, and calls
// Subscribe. The caller holds m.mu.
func (m *interestModel) subscribe(s *Subscription, held map[cid.Cid]bool, keys []cid.Cid) error {
	for _, k := range keys {
		if held[k] {
			continue
		}
		held[k] = true
		if m.holders[k] == 0 {
			m.rises[k]++
		}
		m.holders[k]++
	}
	return s.Subscribe(ctx, keys...)
}

// expectRelease records that s lets go of keys (all of them if keys is nil)
// and returns the keys whose last interest that ends, sorted. The caller
// holds m.mu.
func (m *interestModel) expectRelease(held map[cid.Cid]bool, keys []cid.Cid) []cid.Cid {
	if keys == nil {
		for k := range held {
			keys = append(keys, k)
		}
	}
	var last []cid.Cid
	for _, k := range keys {
		if !held[k] {
			continue
		}
		delete(held, k)
		m.holders[k]--
		if m.holders[k] == 0 {
			last = append(last, k)
		}
	}
	return sortedOrNil(last)
}

// Serialised variant: goroutines, each with its own interest subscription,
// take turns (a test mutex held across each call) at Subscribe, Release and
// ReleaseAll on a small shared key set. Every Release must return exactly
// the keys the model says lost their last interest, the cancel function
// must hear of the same keys (only interests exist), and in the end, per
// key, reports == rises.
func TestInterestStress_SerialisedReleaseMatchesModel(t *testing.T) {
	cancels := &cancelLog{}
	n := New(nil, WithCancelFunc(cancels.record), WithShards(2))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	keys := keysOf(mkBlocks("law", 4))
	m := &interestModel{holders: map[cid.Cid]int{}, rises: map[cid.Cid]int{}, reports: map[cid.Cid]int{}}
	deadline := time.Now().Add(stressFor)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() { serialisedWorker(t, n, m, cancels, keys, uint64(g+1), deadline) })
	}
	wg.Wait()
	total := 0
	for _, k := range keys {
		total += m.reports[k]
		assert.Equal(t, m.rises[k], m.reports[k], "key %s: rises and reports", k)
		assert.Positive(t, m.reports[k], "key %s never reported", k)
		assert.Zero(t, m.holders[k])
	}
	t.Logf("%d transitions to no interest", total)
	require.Empty(t, cancels.take())
	requireIndexEmpty(t, n)
}

func serialisedWorker(t *testing.T, n *Notifier, m *interestModel, cancels *cancelLog, keys []cid.Cid, id uint64, deadline time.Time) {
	rng := rand.New(rand.NewPCG(id, 7))
	in, err := n.NewInterest(id)
	if !assert.NoError(t, err) {
		return
	}
	held := map[cid.Cid]bool{}
	pick := func() []cid.Cid { return pickKeys(rng, keys) }
	release := func(ks []cid.Cid) bool { return releaseMatchesModel(t, m, cancels, in, held, id, ks) }
	m.mu.Lock()
	ok := assert.NoError(t, m.subscribe(in, held, keys)) // every key rises at least once
	m.mu.Unlock()
	for i := 0; ok && stressing(i, deadline); i++ {
		m.mu.Lock()
		switch op := rng.IntN(8); {
		case op < 3:
			ok = assert.NoError(t, m.subscribe(in, held, pick()))
		case op < 7:
			ok = release(pick())
		default:
			ok = release(nil)
			in, err = n.NewInterest(id)
			ok = ok && assert.NoError(t, err)
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if in != nil {
		release(nil)
	}
}

// pickKeys draws one or two of keys, repeats allowed: first the count, then
// each key, in that order.
func pickKeys(rng *rand.Rand, keys []cid.Cid) []cid.Cid {
	out := make([]cid.Cid, 1+rng.IntN(2))
	for i := range out {
		out[i] = keys[rng.IntN(len(keys))] // repeats are fine
	}
	return out
}

// releaseMatchesModel lets go of ks (all if nil) by in, session id, whose
// held keys are held, and checks the report and the cancel function's calls
// against the model. The caller holds m.mu.
func releaseMatchesModel(t *testing.T, m *interestModel, cancels *cancelLog, in *Subscription, held map[cid.Cid]bool, id uint64, ks []cid.Cid) bool {
	t.Helper()
	want := m.expectRelease(held, ks)
	var got []cid.Cid
	if ks == nil {
		got = in.ReleaseAll()
	} else {
		got = in.Release(ks...)
	}
	for _, k := range got {
		m.reports[k]++
	}
	return assert.Equal(t, want, sortedOrNil(got), "session %d released %v", id, ks) &&
		assert.Equal(t, sorted(want...), cancels.take(), "session %d: cancels", id)
}

// Unserialised variant: interest subscriptions Subscribe and Release a small
// key set concurrently while remote copies of the keys' blocks are
// published. Since only interests exist, every report of Release or
// ReleaseAll is a last want and must reach the cancel function once: per
// key, reports == cancels. An anchor interest holds one key throughout: no
// other Release may report it, and the anchor's final ReleaseAll must. Each
// worker sees its own interest survive the publishes.
func TestInterestStress_ConcurrentReportsMatchCancels(t *testing.T) {
	cancels := newKeyCount()
	cs := newCountStore()
	n := New(cs, WithCancelFunc(cancels.add), WithShards(2))
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	b := mkBlocks("conserve", 4)
	keys := keysOf(b)
	pinned := keys[0]
	anchor := mustInterest(t, n, 1000)
	require.NoError(t, anchor.Subscribe(ctx, pinned))

	reports := newKeyCount()
	deadline := time.Now().Add(stressFor)
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() { publishUntil(t, n, b, stop) })
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() { concurrentWorker(t, n, reports, keys, uint64(g+1), deadline) })
	}
	wg.Wait()
	close(stop)
	pub.Wait()

	require.Zero(t, reports.get(pinned), "released while the anchor held it")
	require.Zero(t, cancels.get(pinned))
	require.Equal(t, []cid.Cid{pinned}, anchor.ReleaseAll())
	reports.add([]cid.Cid{pinned})
	total := 0
	for _, k := range keys {
		total += reports.get(k)
		require.Equal(t, reports.get(k), cancels.get(k), "key %s: reports and cancels", k)
		require.Positive(t, reports.get(k), "key %s never reported", k)
		require.False(t, n.Interested(k))
	}
	t.Logf("%d reports", total)
	requireIndexEmpty(t, n)
	require.NotEmpty(t, cs.takePut(), "remote blocks that interests want are stored")
}

// publishUntil publishes remote copies of b, one or two at a time, the first
// time b[0], until stop is closed.
func publishUntil(t *testing.T, n *Notifier, b []blocks.Block, stop <-chan struct{}) {
	for i := 0; ; i++ {
		msg := ResponseMessage{From: "peer", Blocks: []blocks.Block{b[i%len(b)], b[(i*7)%len(b)]}, Haves: keysOf(b[:1])}
		if !assert.NoError(t, n.Publish(ctx, msg)) {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

func concurrentWorker(t *testing.T, n *Notifier, reports *keyCount, keys []cid.Cid, id uint64, deadline time.Time) {
	rng := rand.New(rand.NewPCG(id, 11))
	in, err := n.NewInterest(id)
	if !assert.NoError(t, err) {
		return
	}
	if !assert.NoError(t, in.Subscribe(ctx, keys...)) { // every key rises at least once
		return
	}
	for i := 0; stressing(i, deadline); i++ {
		k := keys[rng.IntN(len(keys))]
		switch rng.IntN(5) {
		case 0, 1:
			if !assert.NoError(t, in.Subscribe(ctx, k)) {
				return
			}
			// Only this subscription can end its own want: publishes must not.
			if !assert.True(t, in.Wants(k)) || !assert.True(t, n.Interested(k)) {
				return
			}
		case 2, 3:
			reports.add(in.Release(k, keys[rng.IntN(len(keys))]))
		default:
			reports.add(in.ReleaseAll())
			if in, err = n.NewInterest(id); !assert.NoError(t, err) {
				return
			}
		}
	}
	reports.add(in.ReleaseAll())
}

// Mixed variant: interest subscriptions, requests and normal subscriptions
// want the same keys while local and remote blocks are published and
// subscriptions come and go. Interests must survive every delivery; in the
// end every interest's ReleaseAll has been counted (at least one report per
// key), the index is empty and -race is clean. The Notifier stores nothing,
// so that every normal want waits in the index for a Publish to end it
// rather than being met by its Subscribe.
func TestInterestStress_MixedKinds(t *testing.T) {
	n, _ := newWithCancels(t, nil, WithShards(4), WithBufferSize(2))
	b := mkBlocks("mixed", 6)
	keys := keysOf(b)
	reports := newKeyCount()
	deadline := time.Now().Add(stressFor)
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() { concurrentWorker(t, n, reports, keys, uint64(g+1), deadline) })
		wg.Go(func() { requestWorker(t, n, b, uint64(g+100), deadline) })
	}
	wg.Wait()
	for _, k := range keys {
		require.Positive(t, reports.get(k), "key %s never reported", k)
	}
	requireIndexEmpty(t, n)
	require.Empty(t, n.sessions)
	require.Empty(t, n.requests)
}

// requestWorker churns requests and normal subscriptions over b, publishing
// local and remote copies of the blocks, which end their wants.
func requestWorker(t *testing.T, n *Notifier, b []blocks.Block, seed uint64, deadline time.Time) {
	rng := rand.New(rand.NewPCG(seed, 13))
	for i := 0; stressing(i, deadline); i++ {
		var s *Subscription
		var err error
		if rng.IntN(2) == 0 {
			s, err = n.NewRequest(nil)
		} else {
			s, err = n.NewSubscriptionFunc(seed, nil)
		}
		if !assert.NoError(t, err) {
			return
		}
		lo := rng.IntN(len(b) - 1)
		ks := keysOf(b[lo : lo+2])
		from := ""
		if rng.IntN(2) == 0 {
			from = "peer"
		}
		ok := assert.NoError(t, s.Subscribe(ctx, ks...)) &&
			assert.NoError(t, n.Publish(ctx, ResponseMessage{From: from, Blocks: b[lo : lo+1], Haves: ks}))
		if rng.IntN(2) == 0 {
			s.Release(slices.Clone(ks)...)
		}
		s.Remove()
		if !ok {
			return
		}
	}
}
