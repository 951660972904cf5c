package notifier_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/bitswapcompat"
	"github.com/bitswapsync/notifier/internal/benchkit"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// W4 (Subscribe of keys already stored, and a GetBlock's whole life), W5
// (memory per want), the idle subscription and the shard count (SPEC.md's
// workloads; W1 to W3 and W6 are in bench_test.go).

// BenchmarkW4 is subscribe-hit: a request for keys whose blocks are all in
// the blockstore, and the receipt of those blocks. impl=floor is the
// blockstore's Get alone, the reference of the target. One op is one call of
// keys keys; ns/key is per key. The keys cycle through 1024 stored blocks.
func BenchmarkW4(b *testing.B) {
	blks := benchkit.Blocks("w4", 1024)
	keys := benchkit.Keys(blks)
	for _, kind := range benchStores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, k := range []int{1, 64} {
				b.Run(fmt.Sprintf("keys=%d", k), func(b *testing.B) {
					for _, impl := range []string{benchkit.ImplLegacy, benchkit.ImplNotifier, benchkit.ImplFloor} {
						b.Run("impl="+impl, func(b *testing.B) { benchW4(b, kind, impl, blks, keys, k) })
					}
				})
			}
		})
	}
}

func benchW4(b *testing.B, kind, impl string, blks []blocks.Block, keys []cid.Cid, k int) {
	b.ReportAllocs()
	ctx := context.Background()
	st, closeStore := benchStore(b, kind)
	defer closeStore()
	if err := st.PutMany(ctx, blks); err != nil {
		b.Fatal(err)
	}
	var get func(batch []cid.Cid) int
	switch impl {
	case benchkit.ImplNotifier:
		n := notifier.New(st.Notifier(), notifier.WithCancelFunc(benchkit.NoCancel))
		defer closeOrFail(b, n)
		s, err := n.NewSubscription(1)
		if err != nil {
			b.Fatal(err)
		}
		get = func(batch []cid.Cid) int {
			if err := s.Subscribe(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			got := 0
			for got < len(batch) {
				got += len((<-s.Messages()).Blocks)
			}
			return got
		}
	case benchkit.ImplLegacy:
		c := legacy.NewClient(st.Legacy(), legacy.WithCancelFunc(benchkit.NoCancel))
		defer c.Close()
		ses := c.NewSession(1)
		get = func(batch []cid.Cid) int {
			ch, err := ses.GetBlocks(ctx, batch...)
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for range ch {
				got++
			}
			return got
		}
	default:
		get = func(batch []cid.Cid) int {
			for _, key := range batch {
				if _, err := st.Get(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
			return len(batch)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		lo := i * k % len(keys)
		if got := get(keys[lo : lo+k]); got != k {
			b.Fatalf("got %d blocks, want %d", got, k)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/key")
}

// W4Life's implementations, the reference first so that benchstat's ratios
// are against it.
const (
	benchLifeGet     = "get"              // the blockstore's Get alone
	benchLifeSub     = "notifier"         // NewSubscription, Subscribe, <-Messages(), Remove
	benchLifeRequest = "notifier-request" // NewRequest, Subscribe (delivers to its func), Remove
	benchLifeFetch   = "notifier-fetch"   // Fetch (returns the block, creates nothing)
	benchLifeCompat  = "compat"           // bitswapcompat.PubSub.Subscribe, receive
	benchLifeGetChan = "get-chan"         // Get, then the channel that compat's API returns: make, send, close, receive
)

// BenchmarkW4Life is W4 for one stored key, counting a call's whole life, as
// a client that makes one request per call pays it: impl=notifier is
// NewSubscription with a session ID never used before, Subscribe of the key,
// the receipt of its block from Messages(), and Remove; impl=notifier-request
// is NewRequest (the block goes to its function, inside Subscribe),
// Subscribe and Remove; impl=notifier-fetch is Fetch, which returns the
// block and creates nothing; impl=compat is a Subscribe call of bitswapcompat's
// PubSub (shared wiring: New on the store) and the receipt of the block;
// impl=get is the blockstore's Get alone, the reference of the target;
// impl=get-chan adds to it what boxo's PubSub API costs any implementation
// (a new channel of one block, the send, the close and the receipt), the
// least that compat can cost. One
// op is one call; ns/key is the same figure. The keys cycle through 1024
// stored blocks.
func BenchmarkW4Life(b *testing.B) {
	blks := benchkit.Blocks("w4", 1024)
	keys := benchkit.Keys(blks)
	for _, kind := range benchW4LifeStores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, impl := range []string{benchLifeGet, benchLifeSub, benchLifeRequest, benchLifeFetch, benchLifeCompat, benchLifeGetChan} {
				b.Run("impl="+impl, func(b *testing.B) { benchW4Life(b, kind, impl, blks, keys) })
			}
		})
	}
}

func benchW4Life(b *testing.B, kind, impl string, blks []blocks.Block, keys []cid.Cid) {
	b.ReportAllocs()
	ctx := context.Background()
	st, closeStore := benchStore(b, kind)
	defer closeStore()
	if err := st.PutMany(ctx, blks); err != nil {
		b.Fatal(err)
	}
	var call func(i int, key cid.Cid) bool
	switch impl {
	case benchLifeSub, benchLifeRequest, benchLifeFetch:
		n := notifier.New(st.Notifier(), notifier.WithCancelFunc(benchkit.NoCancel))
		defer closeOrFail(b, n)
		switch impl {
		case benchLifeSub:
			call = func(i int, key cid.Cid) bool { return benchLifeSubscription(ctx, b, n, uint64(i)+1, key) }
		case benchLifeRequest:
			call = func(_ int, key cid.Cid) bool { return benchLifeRequestCall(ctx, b, n, key) }
		default:
			call = func(_ int, key cid.Cid) bool {
				blk, s, err := n.Fetch(ctx, key, nil)
				if err != nil || s != nil {
					b.Fatalf("Fetch of a stored key: %v, subscription %v", err, s)
				}
				return blk.Cid() == key
			}
		}
	case benchLifeCompat:
		ps, _ := bitswapcompat.NewWithOptions(st.Notifier(), bitswapcompat.WithCancelFunc(benchkit.NoCancel))
		defer ps.Shutdown()
		call = func(_ int, key cid.Cid) bool {
			blk, ok := <-ps.Subscribe(ctx, key)
			return ok && blk.Cid() == key
		}
	case benchLifeGetChan:
		call = func(_ int, key cid.Cid) bool {
			blk, ok := <-benchGetChan(ctx, b, st, key)
			return ok && blk.Cid() == key
		}
	default:
		call = func(_ int, key cid.Cid) bool {
			blk, err := st.Get(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			return blk.Cid() == key
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if !call(i, keys[i%len(keys)]) {
			b.Fatalf("call %d did not receive the block of %s", i, keys[i%len(keys)])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/key")
}

// benchGetChan is W4Life's impl=get-chan: the blockstore's Get of key,
// handed out as boxo's PubSub.Subscribe hands a block, on a new channel that
// holds it and is then closed. Not inlined, as Subscribe is not.
//
//go:noinline
func benchGetChan(ctx context.Context, b *testing.B, st *benchkit.Store, key cid.Cid) <-chan blocks.Block {
	blk, err := st.Get(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	ch := make(chan blocks.Block, 1)
	ch <- blk
	close(ch)
	return ch
}

// benchLifeSubscription is one call of W4Life's impl=notifier.
func benchLifeSubscription(ctx context.Context, b *testing.B, n *notifier.Notifier, id uint64, key cid.Cid) bool {
	s, err := n.NewSubscription(id)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Subscribe(ctx, key); err != nil {
		b.Fatal(err)
	}
	m := <-s.Messages()
	s.Remove()
	return len(m.Blocks) == 1 && m.Blocks[0].Cid() == key
}

// benchLifeRequestCall is one call of W4Life's impl=notifier-request.
func benchLifeRequestCall(ctx context.Context, b *testing.B, n *notifier.Notifier, key cid.Cid) bool {
	var got blocks.Block
	s, err := n.NewRequest(func(m notifier.ResponseMessage) {
		if len(m.Blocks) > 0 {
			got = m.Blocks[0]
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Subscribe(ctx, key); err != nil {
		b.Fatal(err)
	}
	s.Remove()
	return got != nil && got.Cid() == key
}

// BenchmarkW5 is memory: 1,000 subscriptions wanting 1,000 keys each, the
// same keys (shared) or keys of their own (disjoint); nothing is published.
// B/pair is the growth of the live heap (after two GCs, once the
// implementation's goroutines are idle) per (subscription, key) pair;
// stackB/pair the growth of goroutine stacks; goroutines/sub the goroutines
// the implementation keeps per subscription. One op builds the whole index
// (ns/op: the time to subscribe 1M pairs); run it with -benchtime=1x.
//
// Only store=mem runs: the store is only read while subscribing (1M misses),
// the bytes measured do not depend on it (BENCHMARKS.md has a flatfs run
// made by adding it to the list below: the same figures), and 1M flatfs
// misses would take a quarter of CI's budget for one pass.
func BenchmarkW5(b *testing.B) {
	for _, kind := range []string{benchkit.StoreMem} {
		b.Run("store="+kind, func(b *testing.B) {
			for _, shape := range []string{"shared", "disjoint"} {
				b.Run("keys="+shape, func(b *testing.B) {
					for _, impl := range []string{benchkit.ImplLegacy, benchkit.ImplNotifier} {
						b.Run("impl="+impl, func(b *testing.B) { benchW5(b, kind, shape, impl) })
					}
				})
			}
		})
	}
}

func benchW5(b *testing.B, kind, shape, impl string) {
	b.ReportAllocs()
	ctx := context.Background()
	st, closeStore := benchStore(b, kind)
	defer closeStore()
	subKeys := make([][]cid.Cid, benchkit.W5Size)
	shared := benchkit.FakeKeys(5, benchkit.W5Size)
	for i := range subKeys {
		if shape == "shared" {
			subKeys[i] = shared
		} else {
			subKeys[i] = benchkit.FakeKeys(uint32(100+i), benchkit.W5Size)
		}
	}
	build := benchkit.BuildNotifier
	if impl == benchkit.ImplLegacy {
		build = benchkit.BuildLegacy
	}
	pairs := float64(b.N * benchkit.W5Size * benchkit.W5Size)
	var heap, stack, goroutines float64
	b.StopTimer()
	b.ResetTimer()
	for range b.N {
		before, g0 := benchMem()
		b.StartTimer()
		built, err := build(ctx, st, subKeys)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		after, g1 := benchMem()
		heap += float64(after.HeapAlloc) - float64(before.HeapAlloc)
		stack += float64(after.StackInuse) - float64(before.StackInuse)
		goroutines += float64(g1 - g0)
		built.Close()
	}
	b.ReportMetric(heap/pairs, "B/pair")
	b.ReportMetric(stack/pairs, "stackB/pair")
	b.ReportMetric(goroutines/float64(b.N*benchkit.W5Size), "goroutines/sub")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/pairs, "ns/pair")
}

// benchMem waits for the goroutines to be idle, collects garbage (twice, so
// that sync.Pool's victim cache is empty too) and returns the memory
// statistics and the number of goroutines.
func benchMem() (runtime.MemStats, int) {
	benchkit.Settle(5 * time.Second)
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms, runtime.NumGoroutine()
}

// BenchmarkIdleSubscription measures what a subscription that wants nothing
// costs: 1,000 of them, goroutines and bytes per subscription (heap, and
// goroutine stacks).
func BenchmarkIdleSubscription(b *testing.B) {
	const subs = 1000
	for _, impl := range []string{benchkit.ImplLegacy, benchkit.ImplNotifier} {
		b.Run("impl="+impl, func(b *testing.B) {
			b.ReportAllocs()
			var heap, stack, goroutines float64
			for range b.N {
				b.StopTimer()
				before, g0 := benchMem()
				b.StartTimer()
				var stop func()
				if impl == benchkit.ImplLegacy {
					c := legacy.NewClient(nil)
					for i := range subs {
						c.NewSession(uint64(i))
					}
					stop = c.Close
				} else {
					n := notifier.New(nil)
					for i := range subs {
						if _, err := n.NewSubscription(uint64(i)); err != nil {
							b.Fatal(err)
						}
					}
					stop = func() { _ = n.Close() }
				}
				b.StopTimer()
				after, g1 := benchMem()
				heap += float64(after.HeapAlloc) - float64(before.HeapAlloc)
				stack += float64(after.StackInuse) - float64(before.StackInuse)
				goroutines += float64(g1 - g0)
				stop()
				b.StartTimer()
			}
			n := float64(b.N * subs)
			b.ReportMetric(goroutines/n, "goroutines/sub")
			b.ReportMetric(heap/n, "B/sub")
			b.ReportMetric(stack/n, "stackB/sub")
		})
	}
}

// BenchmarkShards chose notifier.DefaultShards: the Notifier alone, store=mem,
// at several shard counts, on W2 and on W3 with churn (run with -cpu 1,2;
// compare with benchstat -col /shards). W3Disjoint is W3Disjoint's
// Notifier without a store at up to 8,192 shards, one publisher and two (run
// it at -cpu 2): whether a second publisher gains once the two messages'
// shards rarely meet (56 keys in 8,192 shards, against ~37 of 64).
func BenchmarkShards(b *testing.B) {
	p := benchW2Plan()
	mk := benchkit.Makers[1] // notifier
	for _, w := range []string{"W2", "W3"} {
		b.Run(w, func(b *testing.B) {
			for _, shards := range []int{1, 8, 32, 64, 256} {
				b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
					if w == "W2" {
						benchW2(b, benchkit.StoreMem, mk, p, shards)
					} else {
						benchW3(b, benchkit.StoreMem, mk, p, benchChurn, shards)
					}
				})
			}
		})
	}
	b.Run("W3Disjoint", func(b *testing.B) {
		p := benchW6Plan()
		for _, shards := range []int{64, 1024, 8192} {
			for _, pubs := range []int{1, 2} {
				b.Run(fmt.Sprintf("shards=%d/pubs=%d", shards, pubs), func(b *testing.B) {
					elapsed, _ := benchRounds(b, "none", mk, p, benchOpts{buffer: benchW2Buffer, pubs: pubs, shards: shards})
					b.ReportMetric(elapsed/float64(b.N*len(p.Msgs)), "ns/msg")
				})
			}
		}
	})
}
