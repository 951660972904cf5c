package notifier_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	notifier "github.com/bitswapsync/notifier"
)

// The linearizability test records concurrent histories of Subscribe,
// Unsubscribe, Publish, Fetch and the Remove of Fetch's requests, and of the
// reads AppendWanted and Wants, and checks them with porcupine against
// linModel, a sequential specification of the Notifier. In half the rounds
// blocks are also deleted from the blockstore, as garbage collection does, so
// that keys keep leaving it and wants keep waiting; a single-block delete is
// atomic in the blockstore, so it linearizes with the rest. Those rounds
// subscribe one key at a time (see randomLinIn), and neither read nor check
// the order of messages; the others check that each subscription receives
// its messages in the order of the linearization (lin_read_test.go).
//
// An operation's observed result is everything it caused: its error, the
// message each subscription received from it, and the keys it reported to the
// cancel function. Subscriptions are func subscriptions and the cancel
// function is synchronous: both run on the goroutine of the operation that
// delivers or cancels, inside it, so each worker registers the operation it
// is running under its goroutine ID and the callbacks file what they see under
// that operation. That attribution is exact, not inferred from timing.
//
// porcupine checks results, not when callbacks return, so G5 is checked
// beside it (checkCancelOrder): a Subscribe that returns nil must not return
// while a cancel call that began before the Subscribe was called, and
// reports one of its keys, still runs. That catches a cancel function called
// outside its keys' shard locks; a Subscribe ordered after a close that began
// during it is left to TestSubscribeOne_HitWaitsForTheCancelOfAnInterestsClose.
//
// Fetch (lin_fetch_test.go) is one more operation of a client, and the
// request it returns one more subscription slot of the model, the client's
// own: it is removed by a later operation of the same client, Remove.

// linRecorder files what callbacks see under the operation that the calling
// goroutine has registered.
type linRecorder struct {
	clock atomic.Int64 // the round's clock: operations' call and return, cancel calls' begin and end

	holdFirst bool // deliveries to s0 hold its lock while the others go on (linRecorder.hold)

	mu      sync.Mutex
	recv    [linSlots]uint16  // messages each slot has received
	running map[int64]*linOut // goroutine ID -> result of the operation it runs
	strays  []string          // callbacks outside any registered operation
	cxls    []linCancel       // every call of the cancel function
}

// linCancel is one call of the cancel function: the keys it reported, and
// the round's clock as it began and as it was about to return.
type linCancel struct {
	keys       keySet
	begin, end int64
}

func (r *linRecorder) begin() *linOut {
	out := new(linOut)
	r.mu.Lock()
	r.running[goid()] = out
	r.mu.Unlock()
	return out
}

func (r *linRecorder) end() {
	r.mu.Lock()
	delete(r.running, goid())
	r.mu.Unlock()
}

// current returns the result being recorded on this goroutine; the lock is
// held until the caller calls r.mu.Unlock.
func (r *linRecorder) current(what string) *linOut {
	r.mu.Lock()
	out := r.running[goid()]
	if out == nil {
		r.strays = append(r.strays, what)
	}
	return out
}

// onMessage is the delivery function of slot s: it files msg, with its
// place in the order the slot received its messages. It runs under the
// subscription's lock (and the delivering operation's shard locks), and
// yields before it returns, as onCancel does: an operation that must also
// lock the subscription to deliver to it waits meanwhile, and the other
// clients run. That is the interleaving a bug in the order of delivery needs
// (lin_read_test.go).
func (r *linRecorder) onMessage(s int, msg notifier.ResponseMessage) {
	out := r.current(fmt.Sprintf("message to %s", slotName(s)))
	seq := r.recv[s]
	r.recv[s]++
	if out != nil {
		m := &out.msgs[s]
		if m.n == 0 {
			m.seq = seq
		}
		m.n++
		m.remote = msg.From != ""
		m.blks, m.dup = linAdd(m.blks, m.dup, blockCids(msg.Blocks))
		m.haves, m.dup = linAdd(m.haves, m.dup, msg.Haves)
		m.dhaves, m.dup = linAdd(m.dhaves, m.dup, msg.DontHaves)
	}
	r.mu.Unlock()
	r.hold(s)
}

// onCancel is the cancel function. After filing the keys it yields a few
// times before it returns, so that a Subscribe that may not return before it
// does (G5) has the time to, if the Notifier let it: see checkCancelOrder.
func (r *linRecorder) onCancel(keys []cid.Cid) {
	begin := r.clock.Add(1)
	out := r.current("cancel")
	if out != nil {
		out.cancels, out.dupCxl = linAdd(out.cancels, out.dupCxl, keys)
	}
	r.mu.Unlock()
	for range 3 {
		runtime.Gosched()
	}
	set, _ := linAdd(0, false, keys)
	end := r.clock.Add(1)
	r.mu.Lock()
	r.cxls = append(r.cxls, linCancel{keys: set, begin: begin, end: end})
	r.mu.Unlock()
}

// checkCancelOrder checks G5 on a round's history, which porcupine does not
// see: it checks results, not when callbacks return. A cancel call that began
// before a Subscribe of one of its keys was called reports a want that ended
// before that Subscribe took effect, so it must return before that Subscribe
// returns nil (its caller would send the key's WANT, and the stale CANCEL
// could follow it).
func (r *linRecorder) checkCancelOrder(t *testing.T, history []porcupine.Operation) {
	t.Helper()
	for _, op := range history {
		in, out := op.Input.(linIn), op.Output.(linOut)
		// A Fetch that returns a request is a Subscribe (its caller sends a
		// WANT); one that returns the block sends none.
		subscribed := in.kind == linSubscribe && out.err == "" ||
			in.kind == linFetch && out.fetched == linFetchedRequest
		if !subscribed {
			continue
		}
		for _, c := range r.cxls {
			if c.keys&in.keys != 0 && c.begin < op.Call && c.end > op.Return {
				t.Fatalf("G5: %v [%d,%d] returned while the cancel call reporting %v that began before it ran [%d,%d]",
					in, op.Call, op.Return, c.keys, c.begin, c.end)
			}
		}
	}
}

func blockCids(bs []blocks.Block) []cid.Cid {
	cs := make([]cid.Cid, len(bs))
	for i, b := range bs {
		cs[i] = b.Cid()
	}
	return cs
}

func linAdd(set keySet, dup bool, keys []cid.Cid) (keySet, bool) {
	for _, c := range keys {
		k := slices.IndexFunc(linBlocks[:], func(b blocks.Block) bool { return b.Cid() == c })
		if k < 0 {
			return set, true
		}
		dup = dup || set&(1<<k) != 0
		set |= 1 << k
	}
	return set, dup
}

// goid returns the current goroutine's ID, from the header of its stack trace
// ("goroutine 42 [running]:").
func goid() int64 {
	var buf [64]byte
	b := bytes.TrimPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	id, err := strconv.ParseInt(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	if err != nil {
		panic("cannot parse goroutine ID: " + err.Error())
	}
	return id
}

// linBlockstore is the blockstore of a round: write-through, so that a
// PutMany is one batch committed under the datastore's lock, atomic against
// a garbage collection's DeleteBlock. Without write-through, boxo's PutMany
// first asks Has of each block and skips those present: a DeleteBlock
// between that Has and the commit leaves a Publish of several blocks with
// one deleted before and one after its write, which no instant explains
// (found as a spurious failure: Fetch's hit saw the later block stored, a
// Subscribe saw the earlier missing).
func linBlockstore() blockstore.Blockstore {
	return blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()), blockstore.WriteThrough(true))
}

// linRound runs linClients goroutines of linOps random operations each on a
// fresh Notifier and returns the history.
func linRound(t *testing.T, shards int, seed uint64) []porcupine.Operation {
	mode := linRoundMode(seed)
	rec := &linRecorder{running: make(map[int64]*linOut), holdFirst: mode == linTuned}
	var fence linFence // collections wait for the operations on their key (linTuned)
	bs := linBlockstore()
	n := notifier.New(bs, notifier.WithShards(shards), notifier.WithCancelFunc(rec.onCancel))
	defer closeOrFail(t, n)
	var subs [linSubs]*notifier.Subscription
	for s := range subs {
		var err error
		subs[s], err = n.NewSubscriptionFunc(uint64(s), func(m notifier.ResponseMessage) { rec.onMessage(s, m) })
		if err != nil {
			t.Fatal(err)
		}
	}
	histories := make([][]porcupine.Operation, linClients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range linClients {
		rng := rand.New(rand.NewPCG(seed, uint64(c)))
		cl := &linClient{n: n, bs: bs, subs: subs[:], rec: rec, slot: linReqSlot(c)}
		wg.Go(func() {
			<-start
			for i := range linOps + 1 {
				in, ok := cl.next(rng, mode, i == linOps)
				if !ok {
					break
				}
				exit := fence.enter(in, mode == linTuned)
				out := rec.begin()
				call := rec.clock.Add(1)
				err := cl.run(context.Background(), in, out)
				ret := rec.clock.Add(1)
				rec.end()
				exit()
				if err != nil {
					out.err = err.Error()
				}
				histories[c] = appendLinOp(histories[c], porcupine.Operation{
					ClientId: c, Input: in, Call: call, Output: *out, Return: ret,
				})
			}
		})
	}
	close(start)
	wg.Wait()
	if len(rec.strays) > 0 {
		t.Fatalf("callbacks outside the operation that caused them: %v", rec.strays)
	}
	history := markOverlaps(slices.Concat(histories...))
	rec.checkCancelOrder(t, history)
	return history
}

// randomLinIn draws one operation. With gc, garbage collections delete
// blocks and every Subscribe is of one key; without, Subscribes are of many
// keys, nothing is deleted, and a session's wants are read (lin_read_test.go
// says why not with gc). A Subscribe reads the blockstore one key at a
// time, holding their reservations, which keep out every writer that goes
// through the Notifier but not a garbage collection: against a blockstore
// changed by others during the call, a Subscribe of several keys sees each
// key as it was at its own Get (doc.go;
// TestStall_SubscribeReadsEachKeyAtItsOwnGet), not at one instant.
func randomLinIn(rng *rand.Rand, gc bool) linIn {
	keys := func() keySet { return keySet(rng.IntN(1 << linKeys)) }
	draws := 17 // reads: 14 to 16
	if gc {
		draws = 14 // no reads (lin_read_test.go)
	}
	switch rng.IntN(draws) {
	case 14, 15:
		return linIn{kind: linWanted, sub: rng.IntN(linSubs), keys: keys() | 1<<rng.IntN(linKeys)} // split by appendLinOp
	case 16:
		return linIn{kind: linWants, sub: rng.IntN(linSubs), keys: 1 << rng.IntN(linKeys)}
	case 12, 13:
		return linIn{kind: linFetch, keys: 1 << rng.IntN(linKeys)} // sub: the caller's request slot
	case 0, 1, 2, 3:
		if gc {
			return linIn{kind: linSubscribe, sub: rng.IntN(linSubs), keys: 1 << rng.IntN(linKeys)}
		}
		return linIn{kind: linSubscribe, sub: rng.IntN(linSubs), keys: keys() | 1<<rng.IntN(linKeys)}
	case 4, 5:
		return linIn{kind: linUnsubscribe, sub: rng.IntN(linSubs), keys: keys()}
	case 6:
		if gc {
			return linIn{kind: linCollect, keys: 1 << rng.IntN(linKeys)}
		}
	}
	sparse := func() keySet { // two draws: about a quarter of the keys
		first := keys()
		return first & keys()
	}
	in := linIn{kind: linPublish, remote: rng.IntN(3) > 0, blks: sparse(), haves: sparse(), dhaves: sparse()}
	if in.blks|in.haves|in.dhaves == 0 {
		in.blks = 1 << rng.IntN(linKeys)
	}
	return in
}

// runLinIn runs in, but for Fetch and Remove (linClient.run).
func runLinIn(ctx context.Context, n *notifier.Notifier, bs blockstore.Blockstore, subs []*notifier.Subscription, in linIn) error {
	switch in.kind {
	case linCollect:
		return bs.DeleteBlock(ctx, in.keys.cids()[0])
	case linPut:
		return bs.Put(ctx, linBlocks[keyIndex(in.keys)])
	case linSubscribe:
		return subs[in.sub].Subscribe(ctx, in.keys.cids()...)
	case linUnsubscribe:
		subs[in.sub].Unsubscribe(in.keys.cids()...)
		return nil
	}
	msg := notifier.ResponseMessage{Haves: in.haves.cids(), DontHaves: in.dhaves.cids()}
	if in.remote {
		msg.From = "peer"
	}
	for _, c := range in.blks.cids() {
		msg.Blocks = append(msg.Blocks, linBlocks[slices.IndexFunc(linBlocks[:], func(b blocks.Block) bool { return b.Cid() == c })])
	}
	return n.Publish(ctx, msg)
}

// TestLinearizability checks histories of concurrent Subscribe, Unsubscribe,
// Publish, Fetch, AppendWanted and Wants calls (and Removes of Fetch's
// requests), and the order in which each subscription received its
// messages, against the sequential specification, for a bounded time,
// with one shard (every operation serialized), two (operations spanning
// shards) and many; then histories in which Publish, Subscribe and Fetch calls stall
// in the blockstore while the other clients go on (linStallRound), for half
// that time. A history that porcupine cannot decide in time is logged and
// skipped, never counted as a pass.
func TestLinearizability(t *testing.T) {
	budget, rounds := 2*time.Second, 300
	if testing.Short() {
		budget = 300 * time.Millisecond
	}
	if *linBudget > 0 {
		budget, rounds = *linBudget, math.MaxInt
	}
	for _, shards := range []int{1, 2, 64} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) { checkLinearizable(t, shards, budget, rounds, linRound) })
	}
	for _, shards := range []int{1, 2, 64} {
		t.Run(fmt.Sprintf("stalls/shards=%d", shards), func(t *testing.T) {
			checkLinearizable(t, shards, budget/2, rounds, linStallRound)
		})
	}
}

var linBudget = flag.Duration("lin-budget", 0, "TestLinearizability: check histories for this long per shard count, "+
	"instead of up to 300 histories in 2s (300ms with -short)")

func checkLinearizable(t *testing.T, shards int, budget time.Duration, rounds int,
	round func(t *testing.T, shards int, seed uint64) []porcupine.Operation,
) {
	seed := uint64(time.Now().UnixNano())
	deadline := time.Now().Add(budget)
	var checked, unknown, ops int
	var fetched [linFetchedNewFunc + 1]int
	for r := uint64(0); r < uint64(rounds) && time.Now().Before(deadline); r++ {
		history := round(t, shards, seed+r)
		ops += len(history)
		for _, op := range history {
			if op.Input.(linIn).kind == linFetch {
				fetched[op.Output.(linOut).fetched]++
			}
		}
		switch res := porcupine.CheckOperationsTimeout(linModel, history, 2*time.Second); res {
		case porcupine.Ok:
			checked++
		case porcupine.Unknown:
			unknown++
			t.Logf("seed %d: porcupine timed out; history skipped, not passed", seed+r)
		default:
			report, _ := linReport(history, seed+r)
			t.Fatal(report)
		}
	}
	t.Logf("%d histories linearizable, %d undecided; %d operations, Fetch returned a block %d times, a request %d, an error %d",
		checked, unknown, ops, fetched[linFetchedBlock], fetched[linFetchedRequest], fetched[linFetchedNothing])
	if checked == 0 {
		t.Skip("no history could be decided in time")
	}
}

// linReport describes a history that is not linearizable: where to find
// porcupine's visualization, the history in call order, and the longest
// linearizations porcupine found, with the state after each step.
func linReport(history []porcupine.Operation, seed uint64) (report, vis string) {
	_, info := porcupine.CheckOperationsVerbose(linModel, history, 10*time.Second)
	var b strings.Builder
	fmt.Fprintf(&b, "history (seed %d) is not linearizable\n", seed)
	if f, err := os.CreateTemp("", "notifier-linearizability-*.html"); err == nil {
		err := porcupine.Visualize(linModel, info, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			vis = f.Name()
			fmt.Fprintf(&b, "visualization (open in a browser): %s\n", vis)
		}
	}
	b.WriteString("history, by call time:\n")
	ops := slices.Clone(history)
	slices.SortFunc(ops, func(x, y porcupine.Operation) int { return int(x.Call - y.Call) })
	for _, op := range ops {
		fmt.Fprintf(&b, "  [%3d,%3d] client %d: %v -> %v\n", op.Call, op.Return, op.ClientId, op.Input, op.Output)
	}
	for _, partition := range info.PartialLinearizationsOperations() {
		longest := slices.MaxFunc(partition, func(x, y []porcupine.Operation) int { return len(x) - len(y) })
		fmt.Fprintf(&b, "longest linearizable prefix (%d of %d operations):\n", len(longest), len(history))
		st := linState{}
		for _, op := range longest {
			st = st.after(op.Input.(linIn), op.Output.(linOut))
			fmt.Fprintf(&b, "  %v -> %v\n      state: %v\n", op.Input, op.Output, st)
		}
		b.WriteString("no operation can come next; what the candidates returned and what the state prescribes:\n")
		rest := slices.DeleteFunc(slices.Clone(ops), func(op porcupine.Operation) bool {
			return slices.ContainsFunc(longest, func(l porcupine.Operation) bool {
				return l.ClientId == op.ClientId && l.Call == op.Call
			})
		})
		if len(rest) == 0 {
			continue
		}
		first := slices.MinFunc(rest, func(x, y porcupine.Operation) int { return int(x.Return - y.Return) }).Return
		for _, op := range rest {
			if op.Call <= first {
				_, want := st.stepDrops(op.Input.(linIn), op.Output.(linOut))
				fmt.Fprintf(&b, "  client %d: %v -> %v, expected %v\n", op.ClientId, op.Input, op.Output, want)
			}
		}
	}
	return b.String(), vis
}

// TestLinearizability_ReportsLostWakeup feeds the checker a history with the
// bug this library exists to prevent, and checks that it is caught and
// reported readably: a Subscribe returned, then a local Publish of its key
// delivered nothing.
func TestLinearizability_ReportsLostWakeup(t *testing.T) {
	history := []porcupine.Operation{
		{ClientId: 0, Input: linIn{kind: linSubscribe, sub: 1, keys: 1}, Call: 1, Output: linOut{}, Return: 2},
		{ClientId: 1, Input: linIn{kind: linPublish, blks: 1}, Call: 3, Output: linOut{}, Return: 4},
		{ClientId: 2, Input: linIn{kind: linSubscribe, sub: 0, keys: 2}, Call: 3, Output: linOut{}, Return: 5},
	}
	if res := porcupine.CheckOperationsTimeout(linModel, history, time.Second); res != porcupine.Illegal {
		t.Fatalf("checker says %v for a lost wakeup", res)
	}
	report, vis := linReport(history, 0)
	if vis != "" {
		t.Cleanup(func() {
			if err := os.Remove(vis); err != nil {
				t.Error(err)
			}
		})
	}
	for _, want := range []string{
		"not linearizable",
		"Publish(local blocks[k0] haves[] donthaves[]) -> nothing, expected s1<-blocks[k0]",
		"cancel[k0]",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if vis == "" {
		t.Error("no visualization written")
	}
}
