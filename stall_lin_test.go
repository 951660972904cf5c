package notifier_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/anishathalye/porcupine"

	notifier "github.com/bitswapsync/notifier"
)

// Histories with stalled blockstore calls for TestLinearizability. Each
// client arms about a third of its Publish, Subscribe and Fetch calls with a
// stall point (gateStore): their first blockstore call parks. The clients run
// concurrently in a synctest bubble; whenever every goroutine of it is
// durably blocked (each client parked in the blockstore, waiting for a
// reservation, or done), a controller releases one parked call, chosen by
// the seed, to pass, fail, fail after writing (torn) or be cancelled. So the
// other clients' operations run while a call stalls, for as long as they
// can, and no sleep decides when.
//
// A call that fails in the blockstore returns an error and changes nothing
// (a torn PutMany has written its blocks, but delivered nothing); the model
// allows that whenever the operation, at its linearization point, calls the
// blockstore.

// The canonical errors of an operation that failed in the blockstore.
const (
	linErrFail   = "blockstore failed"
	linErrTorn   = "blockstore failed after writing"
	linErrCancel = "cancelled in the blockstore"
)

var linIOErrs = map[string]bool{linErrFail: true, linErrTorn: true, linErrCancel: true}

// linErr is err as recorded in a linOut.
func linErr(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errStallTorn):
		return linErrTorn
	case errors.Is(err, errStallInjected):
		return linErrFail
	case errors.Is(err, context.Canceled):
		return linErrCancel
	}
	return err.Error()
}

// callsStore reports whether in, taking effect in st, calls the blockstore:
// only then can it fail there.
func (st linState) callsStore(in linIn) bool {
	switch in.kind {
	case linSubscribe:
		return in.keys&^st.wantsOf(in.sub) != 0
	case linFetch: // its request wants nothing yet: the hit's Get or the Subscribe's
		return true
	case linPublish:
		return in.blks&st.wanted() != 0 || !in.remote && in.blks != 0
	}
	return false
}

// failed is the state after in failed in the blockstore with ioErr: as
// before, but for the blocks that a torn PutMany wrote.
func (st linState) failed(in linIn, ioErr string) linState {
	if ioErr == linErrTorn && in.kind == linPublish {
		if in.remote {
			return st.wrote(in, in.blks&st.wanted())
		}
		return st.wrote(in, in.blks)
	}
	return st
}

// after is the state after in returned out.
func (st linState) after(in linIn, out linOut) linState {
	if linIOErrs[out.err] {
		return st.failed(in, out.err)
	}
	st, _ = st.stepDrops(in, out)
	return st
}

// linStallRound is linRound with stalled blockstore calls.
func linStallRound(t *testing.T, shards int, seed uint64) (history []porcupine.Operation) {
	defer stallWatchdog("TestLinearizability", fuzzWatchdog)()
	synctest.Test(t, func(t *testing.T) { history = runLinStallRound(t, shards, seed) })
	return history
}

func runLinStallRound(t *testing.T, shards int, seed uint64) []porcupine.Operation {
	rec := &linRecorder{running: make(map[int64]*linOut)}
	bs := linBlockstore()
	n := notifier.New(&gateStore{next: bs}, notifier.WithShards(shards), notifier.WithCancelFunc(rec.onCancel))
	defer closeOrFail(t, n)
	var subs [linSubs]*notifier.Subscription
	for s := range subs {
		var err error
		subs[s], err = n.NewSubscriptionFunc(uint64(s), func(m notifier.ResponseMessage) { rec.onMessage(s, m) })
		if err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu        sync.Mutex // guards points
		points    []*stallPoint
		histories = make([][]porcupine.Operation, linClients)
		wg        sync.WaitGroup
	)
	for c := range linClients {
		rng := rand.New(rand.NewPCG(seed, uint64(c)))
		cl := &linClient{n: n, bs: bs, subs: subs[:], rec: rec, slot: linReqSlot(c)}
		wg.Go(func() {
			for i := range linOps + 1 {
				in, ok := cl.next(rng, linStallMode(seed), i == linOps)
				if !ok {
					break
				}
				ctx := context.Background()
				if (in.kind == linPublish || in.kind == linSubscribe || in.kind == linFetch) && rng.IntN(3) == 0 {
					var p *stallPoint
					p, ctx = newStallPoint(ctx)
					mu.Lock()
					points = append(points, p)
					mu.Unlock()
				}
				out := rec.begin()
				call := rec.clock.Add(1)
				err := cl.run(ctx, in, out)
				ret := rec.clock.Add(1)
				rec.end()
				out.err = linErr(err)
				histories[c] = appendLinOp(histories[c], porcupine.Operation{
					ClientId: c, Input: in, Call: call, Output: *out, Return: ret,
				})
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	releaseStalls(t, rand.New(rand.NewPCG(seed, linClients)), finished, &mu, &points)
	if len(rec.strays) > 0 {
		t.Fatalf("callbacks outside the operation that caused them: %v", rec.strays)
	}
	history := markOverlaps(slices.Concat(histories...))
	rec.checkCancelOrder(t, history)
	return history
}

// releaseStalls releases, each time the bubble is blocked, one parked call of
// *points, until finished is closed.
func releaseStalls(t *testing.T, rng *rand.Rand, finished chan struct{}, mu *sync.Mutex, points *[]*stallPoint) {
	for {
		synctest.Wait()
		select {
		case <-finished:
			return
		default:
		}
		mu.Lock()
		var parked []*stallPoint
		*points = slices.DeleteFunc(*points, func(p *stallPoint) bool {
			if p.parked() {
				parked = append(parked, p)
				return true
			}
			return false
		})
		mu.Unlock()
		if len(parked) == 0 {
			t.Fatal("every client is blocked and no blockstore call is parked: a deadlock")
		}
		p := parked[rng.IntN(len(parked))]
		for _, q := range parked {
			if q != p {
				mu.Lock()
				*points = append(*points, q)
				mu.Unlock()
			}
		}
		p.free([...]ioOutcome{ioPass, ioPass, ioPass, ioFail, ioTorn, ioCancel}[rng.IntN(6)])
	}
}
