// Package notifiermicro measures boxo's own notifications PubSub and
// SessionInterestManager against the notifier, in one process, on the
// workloads W1-W4 of the notifier's SPEC.md. boxo's two packages are
// internal, so this file and impls_test.go do not build where they are kept
// (bitswapcompat/testdata/boxomicro/ of github.com/bitswapsync/notifier, a
// testdata directory that the go command ignores): .ci/boxo-micro copies
// them into bitswap/client/internal/notifiermicro/ of a temporary copy of
// boxo that requires the notifier, and runs them there.
//
// Implementations, the last level of every sub-benchmark name, so that
// benchstat -col /impl prints them side by side with ratios to boxo, which
// runs first:
//
//   - impl=boxo: boxo's notifications.New and sessioninterestmanager.New,
//     called as boxo's client calls them. A request (getter.AsyncGetBlocks):
//     PubSub.Subscribe, then RecordSessionInterest, and a goroutine that
//     drains the request's channel. A received message
//     (Client.receiveBlocksFrom, SessionManager.ReceiveFrom,
//     Session.ReceiveFrom): SplitWantedUnwanted; PutMany of the wanted
//     blocks when there is a store (boxo v0.42.0's client leaves that to the
//     blockservice; it is done here, in the order boxo used to, so that
//     every implementation stores the same blocks); FilterInterests,
//     InterestedSessions, and per interested session FilterSessionInterested
//     and, if it has blocks, a send of their keys into its incoming queue
//     (capacity 128, as boxo's session; the HAVEs and DONT_HAVEs would go to
//     the session want sender, which is not modelled); then PubSub.Publish. A session goroutine drains its queue and, for the
//     received blocks, calls RemoveSessionWants (Session.handleReceive,
//     SessionManager.CancelSessionWants).
//   - impl=compat: the same calls on bitswapcompat.NewWithOptions(bs), one
//     Notifier behind both views on the same blockstore (the "store" wiring of
//     .ci/boxofork.sh; "shared" without a store): the Notifier stores, so the
//     driver does not call PutMany.
//   - impl=notifier: the notifier's own API: a Subscription per session,
//     Subscribe for a request, Notifier.Publish for a message, a goroutine per
//     subscription ranging over Messages().
//
// A block counts once it has come out of everything the implementation hands
// a client for it: for boxo and compat, the request's channel and the
// session's queue; for notifier, Messages(). A round ends when every session
// has counted all of its blocks. Between rounds, timer stopped, the round's
// blocks are deleted from the store, every session wants its keys again, and
// the benchmark waits until no goroutine is runnable.
//
// Stores: store=none (no blockstore: boxo skips PutMany, compat and notifier
// are notify-only) and store=mem (boxo's blockstore over
// dssync.MutexWrap(datastore.NewMapDatastore())).
package notifiermicro

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/bitswapcompat"
)

const (
	implBoxo     = "boxo"
	implCompat   = "compat"
	implNotifier = "notifier"
	implLife     = "notifier-life"  // W4 only
	implFetch    = "notifier-fetch" // W4 only

	storeNone = "none"
	storeMem  = "mem"

	w1Keys      = 1024
	w2Subs      = 256
	w2KeysPer   = 64
	w2Blocks    = 16
	w2Haves     = 32
	w2DontHaves = 8
	peers       = 8
	blockSize   = 64

	sessionQueue = 128 // boxo's session incoming queue; the W2 Messages() buffer
)

var (
	impls  = []string{implBoxo, implCompat, implNotifier}
	stores = []string{storeNone, storeMem}
)

func newStore(kind string) blockstore.Blockstore {
	if kind == storeNone {
		return nil
	}
	return blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
}

// --- workloads ----------------------------------------------------------------

// plan is one round: what each session wants, and the messages of the round.
type plan struct {
	subKeys [][]cid.Cid
	keys    []cid.Cid
	msgs    []notifier.ResponseMessage
	perSub  int // blocks each session receives per round
}

func makeBlocks(tag string, n int) []blocks.Block {
	out := make([]blocks.Block, n)
	for i := range out {
		data := make([]byte, blockSize)
		copy(data, fmt.Sprintf("%s/%d/", tag, i))
		out[i] = blocks.NewBlock(data)
	}
	return out
}

func peerOf(i int) string { return fmt.Sprintf("peer%d", i%peers) }

// w1 is the fan-out plan: subs sessions all want the same 1024 keys; one
// block per message.
func w1(subs int) *plan {
	blks := makeBlocks("w1", w1Keys)
	p := &plan{perSub: w1Keys}
	for i, b := range blks {
		p.keys = append(p.keys, b.Cid())
		p.msgs = append(p.msgs, notifier.ResponseMessage{From: peerOf(i), Blocks: []blocks.Block{b}})
	}
	for range subs {
		p.subKeys = append(p.subKeys, p.keys)
	}
	return p
}

// w2 is the disjoint plan: 256 sessions of 64 keys; messages of 16 blocks in
// a fixed random order, with HAVEs for the blocks of the next two messages
// and DONT_HAVEs for half of those of the third, so that every HAVE and
// DONT_HAVE names a key still wanted.
func w2() *plan {
	n := w2Subs * w2KeysPer
	blks := makeBlocks("w2", n)
	p := &plan{perSub: w2KeysPer}
	for _, b := range blks {
		p.keys = append(p.keys, b.Cid())
	}
	for i := range w2Subs {
		p.subKeys = append(p.subKeys, p.keys[i*w2KeysPer:(i+1)*w2KeysPer])
	}
	order := rand.New(rand.NewPCG(2, 0)).Perm(n)
	at := func(lo, hi int) []int { return order[min(lo, n):min(hi, n)] }
	for m := range n / w2Blocks {
		lo := m * w2Blocks
		msg := notifier.ResponseMessage{From: peerOf(m)}
		for _, j := range at(lo, lo+w2Blocks) {
			msg.Blocks = append(msg.Blocks, blks[j])
		}
		for _, j := range at(lo+w2Blocks, lo+w2Blocks+w2Haves) {
			msg.Haves = append(msg.Haves, p.keys[j])
		}
		for _, j := range at(lo+w2Blocks+w2Haves, lo+w2Blocks+w2Haves+w2DontHaves) {
			msg.DontHaves = append(msg.DontHaves, p.keys[j])
		}
		p.msgs = append(p.msgs, msg)
	}
	return p
}

var w2Plan = sync.OnceValue(w2)

// reset deletes the round's blocks from bs and makes every session want its
// keys again.
func (p *plan) reset(ctx context.Context, bs blockstore.Blockstore, x impl) error {
	if bs != nil {
		for _, k := range p.keys {
			if err := bs.DeleteBlock(ctx, k); err != nil {
				return err
			}
		}
	}
	for i, ks := range p.subKeys {
		if err := x.want(ctx, i, ks); err != nil {
			return err
		}
	}
	return nil
}

// --- counting -----------------------------------------------------------------

type counter struct {
	n atomic.Int64
	_ [56]byte
}

// tally counts blocks per consumer; a round ends when every consumer has
// counted per more.
type tally struct {
	per   int64
	round sync.WaitGroup
	cs    []counter
}

func (t *tally) add(i, k int) {
	n := t.cs[i].n.Add(int64(k))
	for r := (n-int64(k))/t.per + 1; r <= n/t.per; r++ {
		t.round.Done()
	}
}

func (t *tally) arm()  { t.round.Add(len(t.cs)) }
func (t *tally) wait() { t.round.Wait() }

func (t *tally) sum(lo, hi int) int64 {
	var s int64
	for i := lo; i < hi; i++ {
		s += t.cs[i].n.Load()
	}
	return s
}

var settleSamples = []metrics.Sample{
	{Name: "/sched/goroutines/runnable:goroutines"},
	{Name: "/sched/goroutines/running:goroutines"},
}

// settle waits, up to limit, until no goroutine but the caller is running
// or runnable in three reads in a row.
func settle(limit time.Duration) {
	deadline := time.Now().Add(limit)
	s := slices.Clone(settleSamples)
	for quiet := 0; quiet < 3; {
		metrics.Read(s)
		if s[0].Value.Kind() == metrics.KindBad { // Go < 1.26
			time.Sleep(10 * time.Millisecond)
			return
		}
		if s[0].Value.Uint64() == 0 && s[1].Value.Uint64() <= 1 {
			quiet++
			runtime.Gosched()
			continue
		}
		quiet = 0
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// --- benchmarks ---------------------------------------------------------------

// BenchmarkW1 is fan-out: S sessions all want the same 1024 keys; one block
// per message. One op is a round of 1024 messages; ns/block is per block
// delivered to one session.
func BenchmarkW1(b *testing.B) {
	for _, kind := range stores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, s := range []int{1, 16, 256} {
				p := w1(s)
				b.Run(fmt.Sprintf("S=%d", s), func(b *testing.B) {
					for _, name := range impls {
						b.Run("impl="+name, func(b *testing.B) {
							elapsed := rounds(b, kind, name, p, w1Keys)
							b.ReportMetric(elapsed/float64(b.N*len(p.msgs)*s), "ns/block")
						})
					}
				})
			}
		})
	}
}

// BenchmarkW2 is disjoint: 256 sessions of 64 keys; messages of 16 blocks, 32
// HAVEs and 8 DONT_HAVEs from 8 peers. One op is a round of 1024 messages.
func BenchmarkW2(b *testing.B) {
	p := w2Plan()
	for _, kind := range stores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, name := range impls {
				b.Run("impl="+name, func(b *testing.B) {
					elapsed := rounds(b, kind, name, p, sessionQueue)
					b.ReportMetric(elapsed/float64(b.N*len(p.msgs)), "ns/msg")
				})
			}
		})
	}
}

// rounds runs b.N rounds of p and returns the timed nanoseconds.
func rounds(b *testing.B, kind, name string, p *plan, buffer int) float64 {
	b.ReportAllocs()
	ctx := context.Background()
	bs := newStore(kind)
	x := newImpl(b, name, bs, p, buffer)
	defer x.close()
	b.StopTimer()
	b.ResetTimer()
	for range b.N {
		if err := p.reset(ctx, bs, x); err != nil {
			b.Fatal(err)
		}
		settle(time.Second)
		x.arm()
		b.StartTimer()
		for i := range p.msgs {
			if err := x.publish(ctx, &p.msgs[i]); err != nil {
				b.Fatal(err)
			}
		}
		x.wait()
		b.StopTimer()
	}
	return float64(b.Elapsed().Nanoseconds())
}

// BenchmarkW3 is W2 with b.RunParallel publishers, GOMAXPROCS of them: run
// it with -cpu 1,2 (benchstat -col /gomaxprocs). One op is one message. The
// publisher that takes a round's first message waits for the round before,
// and resets the wants with the timer stopped while the others wait.
func BenchmarkW3(b *testing.B) {
	p := w2Plan()
	for _, kind := range stores {
		b.Run("store="+kind, func(b *testing.B) {
			for _, name := range impls {
				b.Run("impl="+name, func(b *testing.B) { benchW3(b, kind, name, p) })
			}
		})
	}
}

func benchW3(b *testing.B, kind, name string, p *plan) {
	b.ReportAllocs()
	ctx := context.Background()
	bs := newStore(kind)
	x := newImpl(b, name, bs, p, sessionQueue)
	defer x.close()
	if err := p.reset(ctx, bs, x); err != nil {
		b.Fatal(err)
	}
	settle(time.Second)
	x.arm()
	g := &gate{b: b, p: p, bs: bs, x: x}
	g.cond = sync.NewCond(&g.mu)
	g.pub[0].Add(len(p.msgs))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.publish(ctx)
		}
	})
	for x.delivered() < int64(b.N)*w2Blocks {
		runtime.Gosched()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
}

// gate hands W3's publishers the messages of successive rounds.
type gate struct {
	b    *testing.B
	p    *plan
	bs   blockstore.Blockstore
	x    impl
	next atomic.Int64      // the next message, counted over all rounds
	pub  [2]sync.WaitGroup // publishes of round r, in pub[r%2]

	mu     sync.Mutex // guards opened
	cond   *sync.Cond // signalled when opened grows
	opened int64      // the last round whose messages may be published
}

func (g *gate) publish(ctx context.Context) {
	i := g.next.Add(1) - 1
	n := int64(len(g.p.msgs))
	r := i / n
	if i%n == 0 && r > 0 {
		g.turn(ctx, r)
	} else {
		g.mu.Lock()
		for g.opened < r {
			g.cond.Wait()
		}
		g.mu.Unlock()
	}
	if err := g.x.publish(ctx, &g.p.msgs[i%n]); err != nil {
		g.b.Error(err)
	}
	g.pub[r%2].Done()
}

// turn ends round r-1 and opens round r; the other publishers wait, so the
// timer is not touched concurrently.
func (g *gate) turn(ctx context.Context, r int64) {
	g.pub[(r-1)%2].Wait()
	g.x.wait()
	g.b.StopTimer()
	if err := g.p.reset(ctx, g.bs, g.x); err != nil {
		g.b.Error(err)
	}
	settle(50 * time.Millisecond)
	g.x.arm()
	g.pub[r%2].Add(len(g.p.msgs))
	g.b.StartTimer()
	g.mu.Lock()
	g.opened = r
	g.cond.Broadcast()
	g.mu.Unlock()
}

// BenchmarkW4 is subscribe-hit for one key whose block is stored, on
// store=mem. impl=boxo is what boxo does for a stored block: the
// blockservice's blockstore Get, which answers before bitswap is asked (boxo's
// PubSub does not look at the store), so it is also the floor. impl=compat is
// a bitswapcompat PubSub.Subscribe call of the key (it checks the store as one
// step with subscribing) and the receipt of the block. impl=notifier is
// Subscribe and a receive from Messages() on a long-lived subscription;
// impl=notifier-life a call's whole life: NewSubscription with a fresh
// session ID, Subscribe, receive, Remove; impl=notifier-fetch a call of
// Notifier.Fetch, which returns a stored block and makes nothing. One op is
// one key.
func BenchmarkW4(b *testing.B) {
	blks := makeBlocks("w4", 1024)
	for _, kind := range []string{storeMem} {
		b.Run("store="+kind, func(b *testing.B) {
			b.Run("keys=1", func(b *testing.B) {
				for _, name := range []string{implBoxo, implCompat, implNotifier, implLife, implFetch} {
					b.Run("impl="+name, func(b *testing.B) { benchW4(b, kind, name, blks) })
				}
			})
		})
	}
}

func benchW4(b *testing.B, kind, name string, blks []blocks.Block) {
	b.ReportAllocs()
	ctx := context.Background()
	bs := newStore(kind)
	if err := bs.PutMany(ctx, blks); err != nil {
		b.Fatal(err)
	}
	var call func(i int, k cid.Cid) bool
	switch name {
	case implBoxo:
		call = func(_ int, k cid.Cid) bool {
			blk, err := bs.Get(ctx, k)
			return err == nil && blk.Cid() == k
		}
	case implCompat:
		ps, _ := bitswapcompat.NewWithOptions(bs)
		defer ps.Shutdown()
		call = func(_ int, k cid.Cid) bool {
			blk, ok := <-ps.Subscribe(ctx, k)
			return ok && blk.Cid() == k
		}
	case implFetch:
		n := notifier.New(bs, notifier.WithCancelFunc(noCancel))
		defer func() { _ = n.Close() }()
		call = func(_ int, k cid.Cid) bool {
			blk, s, err := n.Fetch(ctx, k, nil)
			if err != nil || s != nil {
				b.Fatalf("Fetch of a stored key: %v, subscription %v", err, s)
			}
			return blk.Cid() == k
		}
	default:
		n := notifier.New(bs, notifier.WithCancelFunc(noCancel))
		defer func() { _ = n.Close() }()
		s, err := n.NewSubscription(0)
		if err != nil {
			b.Fatal(err)
		}
		call = func(i int, k cid.Cid) bool {
			sub := s
			if name == implLife {
				if sub, err = n.NewSubscription(uint64(i) + 1); err != nil {
					b.Fatal(err)
				}
			}
			if err := sub.Subscribe(ctx, k); err != nil {
				b.Fatal(err)
			}
			m := <-sub.Messages()
			if name == implLife {
				sub.Remove()
			}
			return len(m.Blocks) == 1 && m.Blocks[0].Cid() == k
		}
	}
	b.ResetTimer()
	for i := range b.N {
		k := blks[i%len(blks)].Cid()
		if !call(i, k) {
			b.Fatalf("call %d did not get the block of %s", i, k)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/key")
}
