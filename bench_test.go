package notifier_test

// Benchmarks for the workloads W1-W5 of SPEC.md ("Performance"), each run on
// the Notifier and, in the same run, on the baseline that reproduces today's
// two-layer bitswap design (internal/legacy) and on a floor; the last
// sub-benchmark level is impl=..., so that
//
//	go run golang.org/x/perf/cmd/benchstat@latest -col /impl out.txt
//
// prints them side by side with the ratio to the baseline, which runs first.
// BENCHMARKS.md gives the commands and the results; internal/benchkit holds
// the workloads and the adapters that drive every implementation the same
// way.
//
// Fairness, for every workload:
//   - Same blockstore, same keys, same messages, same order. A store=none row
//     is notify-only: notifier.New(nil) and legacy.NewClient(nil).
//   - Consumers: every delivery is drained and counted by the goroutines a
//     client would run: per Notifier subscription one goroutine ranging over
//     Messages(); per baseline session one goroutine draining Updates() and,
//     per request, one draining the GetBlocks channel. A round's time ends
//     only when every consumer has counted every block of the round.
//   - Buffers: a Notifier subscription's channel holds as much as the
//     baseline hands a session without blocking: W1 1024 (its GetBlocks
//     channel holds len(keys)), W2/W3 128 (boxo's session queue). The
//     notifier-buf32 rows use the default of 32.
//   - W1's floor-msg rows (every store but flatfs) are the floor sending what the
//     Notifier's API must send, a ResponseMessage with a Blocks slice of its
//     own per session: a diagnostic of what the API costs (BENCHMARKS.md,
//     twenty-sixth series).
//   - A delivered block ends the want, so a round consumes every want. Between
//     rounds, with the timer stopped, the round's blocks are deleted from the
//     store and every session wants its keys again (Subscribe / GetBlocks,
//     which check the store), and the benchmark waits until the goroutines
//     that this started are idle (the baseline's request goroutines build
//     their state after GetBlocks returns).
//   - Both have the same no-op cancel function.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/benchkit"
)

const (
	benchW1Buffer = 1024 // a W1 subscription's channel: the baseline's GetBlocks channel holds 1024
	benchW2Buffer = 128  // a W2/W3 subscription's channel: boxo's session queue
	benchChurn    = 5000 // W3's Subscribe/Unsubscribe operations per second
	benchSettle   = time.Second
)

// benchGC makes benchRounds collect garbage before each timed round, a
// diagnostic: without it, a round's timed part pays some of the collection
// work for the garbage of its untimed setup, and the Notifier's setup makes
// more than the floor's (its Subscribe checks the blockstore for each key,
// and boxo's blockstore allocates a datastore key for each check).
var benchGC = flag.Bool("bench-gc", false, "benchmarks: collect garbage before each timed round of W1 and W2 (a diagnostic)")

var (
	benchAllStores = []string{benchkit.StoreNone, benchkit.StoreMem, benchkit.StoreFlatFS}
	benchStores    = []string{benchkit.StoreMem, benchkit.StoreFlatFS}
	// benchW3Stores adds memconc, an in-memory store that does not serialise
	// puts, to W3: under mem, dssync.MutexWrap runs one PutMany at a time,
	// which caps what two publishers can gain.
	benchW3Stores = []string{benchkit.StoreNone, benchkit.StoreMem, benchkit.StoreMemConc, benchkit.StoreFlatFS}
	// benchW1Stores adds nop to every store: W1 at store=nop beside none
	// is what the Notifier's blockstore path costs without a store's work.
	benchW1Stores = []string{benchkit.StoreNone, benchkit.StoreNop, benchkit.StoreMem, benchkit.StoreFlatFS}
	// benchW4LifeStores are W4Life's stores: mem, the store of the target,
	// memconc and flatfs.
	benchW4LifeStores = []string{benchkit.StoreMem, benchkit.StoreMemConc, benchkit.StoreFlatFS}

	// benchImpls are W1's and W2's implementations, the baseline first; see
	// benchImplsFor.
	benchImpls = []benchkit.Maker{
		benchkit.Makers[0], // legacy
		benchkit.Makers[1], // notifier
		{Name: "notifier-buf32", New: func(c benchkit.Config) (benchkit.Impl, error) {
			c.Buffer = notifier.DefaultBufferSize
			return benchkit.NewNotifier(c)
		}},
		benchkit.Makers[2], // notifier-func
		benchkit.Makers[3], // floor
	}

	benchW2Plan = sync.OnceValue(benchkit.W2)
	benchW6Plan = sync.OnceValue(benchkit.W6)
)

// benchImplsFor returns the implementations to run on store kind: all of
// them, but on flatfs, where creating a file costs more than anything
// measured, only the baseline, the Notifier and the floor, which keeps one
// pass of every benchmark (-benchtime=1x) within CI's time.
func benchImplsFor(kind string) []benchkit.Maker {
	if kind != benchkit.StoreFlatFS {
		return benchImpls
	}
	return []benchkit.Maker{benchkit.Makers[0], benchkit.Makers[1], benchkit.Makers[3]}
}

// benchStore opens a store of kind, in a temporary directory for flatfs, and
// returns it with the function that closes and removes it.
func benchStore(b *testing.B, kind string) (*benchkit.Store, func()) {
	b.Helper()
	dir, err := os.MkdirTemp("", "notifier-bench-")
	if err != nil {
		b.Fatal(err)
	}
	st, err := benchkit.OpenStore(kind, dir)
	if err != nil {
		b.Fatal(err)
	}
	return st, func() {
		if err := st.Close(); err != nil {
			b.Error(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkW1 is the fan-out workload: S subscriptions all want the same 1024
// keys; each message carries one block from a remote peer, so each message is
// S deliveries. One op is one round of 1024 messages; ns/block is per
// delivered block (per subscription). The floor row stores the blocks too:
// under store=mem it is "floor plus the blockstore put". store=nop (a store
// that does nothing) separates the cost of the blockstore path from the
// store's work. The floor-workN rows, a diagnostic, are the floor doing N
// rounds of benchkit.Work per delivery before a message's sends
// (BenchmarkFloorWork says what a round costs).
func BenchmarkW1(b *testing.B) {
	for _, kind := range benchW1Stores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, s := range []int{1, 16, 256} {
				p := benchkit.W1(s)
				b.Run(fmt.Sprintf("S=%d", s), func(b *testing.B) {
					for _, mk := range benchW1Impls(kind) {
						b.Run("impl="+mk.Name, func(b *testing.B) {
							elapsed, _ := benchRounds(b, kind, mk, p, benchOpts{buffer: benchW1Buffer})
							b.ReportMetric(elapsed/float64(b.N*len(p.Msgs)*s), "ns/block")
						})
					}
				})
			}
		})
	}
}

// benchFloorWork are the rounds of benchkit.Work per delivery of W1's
// floor-work rows: about 9 and 26 ns here (BenchmarkFloorWork: 1.09 ns a
// round, BENCHMARKS.md twelfth series).
var benchFloorWork = []int{8, 24}

// benchW1Impls are W1's implementations on store kind: benchImplsFor's and,
// but on flatfs, the floor-work diagnostic rows.
func benchW1Impls(kind string) []benchkit.Maker {
	impls := benchImplsFor(kind)
	if kind == benchkit.StoreFlatFS {
		return impls
	}
	impls = append(slices.Clone(impls), benchkit.Maker{Name: benchkit.ImplFloorMsg, New: benchkit.NewFloorMsg})
	for _, w := range benchFloorWork {
		impls = append(impls, benchkit.Maker{Name: fmt.Sprintf("%s-work%d", benchkit.ImplFloor, w), New: func(c benchkit.Config) (benchkit.Impl, error) {
			return benchkit.NewFloorWork(c, w)
		}})
	}
	return impls
}

// BenchmarkFloorWork is what one round of benchkit.Work costs, for reading
// W1's floor-work rows: ns/op over rounds=1000 is ns per round.
func BenchmarkFloorWork(b *testing.B) {
	const rounds = 1000
	b.Run(fmt.Sprintf("rounds=%d", rounds), func(b *testing.B) {
		var sink uint64
		for i := range b.N {
			sink += benchkit.Work(uint64(i), rounds)
		}
		if sink == 1 {
			b.Log(sink) // keeps sink
		}
	})
}

// BenchmarkW2 is the disjoint workload: 256 subscriptions of 64 keys each;
// messages of 16 blocks, 32 HAVEs and 8 DONT_HAVEs from 8 peers, each
// reaching about 50 subscriptions. One op is one round of 1024 messages.
// allocs/msg counts every allocation while the timer runs (consumers
// included); the store=none row is the figure "outside PutMany".
func BenchmarkW2(b *testing.B) {
	p := benchW2Plan()
	for _, kind := range benchAllStores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, mk := range benchImplsFor(kind) {
				b.Run("impl="+mk.Name, func(b *testing.B) { benchW2(b, kind, mk, p, 0) })
			}
		})
	}
}

func benchW2(b *testing.B, kind string, mk benchkit.Maker, p *benchkit.Plan, shards int) {
	elapsed, mallocs := benchRounds(b, kind, mk, p, benchOpts{buffer: benchW2Buffer, shards: shards})
	msgs := float64(b.N * len(p.Msgs))
	b.ReportMetric(elapsed/msgs, "ns/msg")
	b.ReportMetric(float64(mallocs)/msgs, "allocs/msg")
}

// benchOpts are the knobs of benchRounds.
type benchOpts struct {
	buffer int // Config.Buffer
	shards int // Config.Shards; 0: the default
	pubs   int // goroutines that publish a round's messages; 0 or 1: one
}

// benchRounds runs b.N rounds of p on a fresh implementation and returns the
// timed nanoseconds and the allocations made while the timer ran.
func benchRounds(b *testing.B, kind string, mk benchkit.Maker, p *benchkit.Plan, o benchOpts) (elapsed float64, mallocs uint64) {
	b.ReportAllocs()
	ctx := context.Background()
	st, closeStore := benchStore(b, kind)
	defer closeStore()
	impl, err := mk.New(benchkit.Config{Store: st, Subs: len(p.SubKeys), PerSub: p.PerSub, Buffer: o.buffer, Shards: o.shards})
	if err != nil {
		b.Fatal(err)
	}
	defer impl.Close()
	var ms runtime.MemStats
	b.StopTimer()
	b.ResetTimer()
	for range b.N {
		if err := p.Reset(ctx, st, impl); err != nil {
			b.Fatal(err)
		}
		benchkit.Settle(benchSettle)
		if *benchGC {
			runtime.GC()
		}
		impl.Arm()
		runtime.ReadMemStats(&ms)
		m0 := ms.Mallocs
		b.StartTimer()
		if err := benchPublish(ctx, impl, p.Msgs, o.pubs); err != nil {
			b.Fatal(err)
		}
		impl.Wait()
		b.StopTimer()
		runtime.ReadMemStats(&ms)
		mallocs += ms.Mallocs - m0
	}
	return float64(b.Elapsed().Nanoseconds()), mallocs
}

// benchPublish publishes msgs on impl from pubs goroutines (at least one),
// goroutine g publishing msgs[i] for every i with i%pubs == g, in order. It
// returns when every publish has returned.
func benchPublish(ctx context.Context, impl benchkit.Impl, msgs []notifier.ResponseMessage, pubs int) error {
	if pubs <= 1 {
		for i := range msgs {
			if err := impl.Publish(ctx, &msgs[i]); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, pubs)
	var wg sync.WaitGroup
	for g := range pubs {
		wg.Go(func() {
			for i := g; i < len(msgs); i += pubs {
				if errs[g] = impl.Publish(ctx, &msgs[i]); errs[g] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// BenchmarkW6 is concurrent publishers on a store with I/O latency: the
// store is memconc whose PutMany sleeps 1 ms first (benchkit.StoreSlowPut),
// and pubs goroutines publish a round of W6 (benchkit.W6: W2's messages, 256
// a round, from 8 publishers whose keys are disjoint; 64 subscriptions of 64
// keys, each hearing from every publisher). With pubs=8 every goroutine
// publishes one publisher's messages; with pubs=1 one goroutine publishes
// them all, in the same order per publisher. The PutMany of concurrent
// publishes can overlap only if nothing is held across it, so the
// throughput ratio pubs=8 / pubs=1 (ns/msg of pubs=1 over pubs=8; benchstat
// -col /pubs) measures that. One op is one round; ns/msg and msgs/s are per
// message published. The floor, which holds nothing, shows the most that
// overlap gives on this machine.
func BenchmarkW6(b *testing.B) {
	p := benchW6Plan()
	kind := benchkit.StoreSlowPut
	b.Run("store="+kind, func(b *testing.B) {
		for _, pubs := range []int{1, benchkit.W6Pubs} {
			b.Run(fmt.Sprintf("pubs=%d", pubs), func(b *testing.B) {
				for _, mk := range []benchkit.Maker{benchkit.Makers[0], benchkit.Makers[1], benchkit.Makers[3]} {
					b.Run("impl="+mk.Name, func(b *testing.B) {
						elapsed, mallocs := benchRounds(b, kind, mk, p, benchOpts{buffer: benchW2Buffer, pubs: pubs})
						msgs := float64(b.N * len(p.Msgs))
						b.ReportMetric(elapsed/msgs, "ns/msg")
						b.ReportMetric(msgs/(elapsed/1e9), "msgs/s")
						b.ReportMetric(float64(mallocs)/msgs, "allocs/msg")
					})
				}
			})
		}
	})
}

// BenchmarkW3Disjoint separates the two causes that keep W3 from scaling
// with a store. W3's messages overlap: message m names, as HAVEs, the blocks
// of messages m+1 and m+2, so two publishers of consecutive messages
// contend for the same keys, and the one whose HAVE names a block that the
// other is storing waits for that PutMany (a Publish reads its keys as they
// are after every earlier write of them: see publishSteps). Here the two
// publishers take W6's plan, each only its own keys (W2's messages, every
// name in a message from its publisher's keys), so nothing waits for another
// publisher's blockstore call; what is left is the CPU and the shard locks.
// Run it at -cpu 2: pubs=2 against pubs=1 is the gain from the second
// publisher. One op is one round; ns/msg is per message.
func BenchmarkW3Disjoint(b *testing.B) {
	p := benchW6Plan()
	for _, kind := range benchW3Stores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, pubs := range []int{1, 2} {
				b.Run(fmt.Sprintf("pubs=%d", pubs), func(b *testing.B) {
					for _, mk := range []benchkit.Maker{benchkit.Makers[0], benchkit.Makers[1], benchkit.Makers[3]} {
						b.Run("impl="+mk.Name, func(b *testing.B) {
							elapsed, _ := benchRounds(b, kind, mk, p, benchOpts{buffer: benchW2Buffer, pubs: pubs})
							b.ReportMetric(elapsed/float64(b.N*len(p.Msgs)), "ns/msg")
						})
					}
				})
			}
		})
	}
}

// BenchmarkW3 is W2 with b.RunParallel publishers, GOMAXPROCS of them: run it
// with -cpu 1,2 and compare with benchstat -col /gomaxprocs. One op is one
// message. The publishers share the round's messages; at the end of a round
// the publisher that takes the next round's first message waits for the
// round's publishes and deliveries and, with the timer stopped, resets the
// wants while the others wait. With churn=5000 another goroutine makes a
// session of its own want and unwant keys that are never published, 5,000
// operations a second (Subscribe/Unsubscribe; for the baseline GetBlocks
// and the cancel of its context); churn-ops/s is the rate achieved. The floor
// has no churn row: it keeps no wants to churn. Stores: those of W2 plus
// memconc (see benchW3Stores), so that 2 publishers / 1 can be read per store
// with benchstat -col /gomaxprocs -filter '.name:W3 /store:memconc'.
func BenchmarkW3(b *testing.B) {
	p := benchW2Plan()
	for _, kind := range benchW3Stores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, churn := range []int{0, benchChurn} {
				b.Run(fmt.Sprintf("churn=%d", churn), func(b *testing.B) {
					for _, mk := range benchkit.Makers {
						if mk.Name == benchkit.ImplNotifierFunc || churn > 0 && mk.Name == benchkit.ImplFloor {
							continue
						}
						b.Run("impl="+mk.Name, func(b *testing.B) { benchW3(b, kind, mk, p, churn, 0) })
					}
				})
			}
		})
	}
}

func benchW3(b *testing.B, kind string, mk benchkit.Maker, p *benchkit.Plan, churn, shards int) {
	b.ReportAllocs()
	ctx := context.Background()
	st, closeStore := benchStore(b, kind)
	defer closeStore()
	impl, err := mk.New(benchkit.Config{Store: st, Subs: len(p.SubKeys), PerSub: p.PerSub, Buffer: benchW2Buffer, Shards: shards})
	if err != nil {
		b.Fatal(err)
	}
	defer impl.Close()
	g := &benchGate{b: b, p: p, st: st, impl: impl}
	g.cond = sync.NewCond(&g.mu)
	if err := p.Reset(ctx, st, impl); err != nil {
		b.Fatal(err)
	}
	benchkit.Settle(benchSettle)
	impl.Arm()
	g.pub[0].Add(len(p.Msgs))
	var stopChurn func() (int, time.Duration)
	if churn > 0 {
		stopChurn, err = benchkit.Churn(ctx, impl.(benchkit.Churner), benchkit.FakeKeys(3, 1024), churn)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.publish(ctx)
		}
	})
	benchkit.WaitDelivered(impl, int64(b.N)*benchkit.W2Blocks)
	b.StopTimer()
	if stopChurn != nil {
		ops, took := stopChurn()
		b.ReportMetric(float64(ops)/took.Seconds(), "churn-ops/s")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
}

// benchGate hands the publishers of W3 the messages of successive rounds and
// lets one of them reset the wants between rounds while the others wait.
type benchGate struct {
	b    *testing.B
	p    *benchkit.Plan
	st   *benchkit.Store
	impl benchkit.Impl
	next atomic.Int64 // index of the next message, counted over all rounds

	pub [2]sync.WaitGroup // publishes of round r, in pub[r%2]

	mu     sync.Mutex // guards opened
	cond   *sync.Cond // signalled when opened grows
	opened int64      // the last round whose messages may be published
}

func (g *benchGate) publish(ctx context.Context) {
	i := g.next.Add(1) - 1
	n := int64(len(g.p.Msgs))
	r := i / n
	if i%n == 0 && r > 0 {
		g.turn(ctx, r)
	} else {
		g.await(r)
	}
	if err := g.impl.Publish(ctx, &g.p.Msgs[i%n]); err != nil {
		g.b.Error(err)
	}
	g.pub[r%2].Done()
}

func (g *benchGate) await(r int64) {
	g.mu.Lock()
	for g.opened < r {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// turn ends round r-1 and opens round r. The other publishers are either
// finishing round r-1 or waiting for r, so the timer, stopped here, is not
// touched concurrently.
func (g *benchGate) turn(ctx context.Context, r int64) {
	g.pub[(r-1)%2].Wait()
	g.impl.Wait()
	g.b.StopTimer()
	if err := g.p.Reset(ctx, g.st, g.impl); err != nil {
		g.b.Error(err)
	}
	benchkit.Settle(50 * time.Millisecond) // the churn goroutine may never let it settle
	g.impl.Arm()
	g.pub[r%2].Add(len(g.p.Msgs))
	g.b.StartTimer()
	g.mu.Lock()
	g.opened = r
	g.cond.Broadcast()
	g.mu.Unlock()
}
