package bitswapcompat

import (
	"context"
	"runtime"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier/internal/heaptest"
)

// burst is the number of calls and of sessions of the burst tests: the maps
// that list them keep about 1.2 MB of storage after such a burst without
// shrink.Fit.
const burst = 50_000

// TestBurst_CallsGiveBackTheirStorage: PubSub's list of live calls gives
// back the storage of a burst of calls once they have ended, by their ctx or
// by the delivery of their block.
func TestBurst_CallsGiveBackTheirStorage(t *testing.T) {
	for _, end := range []string{"ctx", "delivery"} {
		t.Run(end, func(t *testing.T) {
			ps := NewPubSub(nil)
			t.Cleanup(ps.Shutdown)
			blk := newBlocks(t, 1)[0]
			base := heaptest.Live()
			chs := make([]<-chan blocks.Block, 0, burst)
			cancels := make([]context.CancelFunc, 0, burst)
			for range burst {
				ctx, cancel := context.WithCancel(context.Background())
				chs = append(chs, ps.Subscribe(ctx, blk.Cid()))
				cancels = append(cancels, cancel)
			}
			ps.mu.Lock()
			listed := len(ps.calls)
			ps.mu.Unlock()
			if listed != burst {
				t.Fatalf("%d calls listed, want %d", listed, burst)
			}
			if end == "delivery" {
				ps.Publish("peer", blk) // completes every call inside the delivery (finish)
			}
			// One call at a time: each ends on a goroutine of its ctx's
			// AfterFunc, and the runtime keeps the descriptors of the most
			// goroutines that ever ran at once.
			for i, ch := range chs {
				cancels[i]()
				for range ch { // closed once the call has ended
				}
			}
			heaptest.RequireBackTo(t, base, 256<<10)
			runtime.KeepAlive(ps)
		})
	}
}

// TestBurst_SessionsGiveBackTheirStorage: the SessionInterestManager's
// sessions give back the storage of a burst of sessions once removed.
func TestBurst_SessionsGiveBackTheirStorage(t *testing.T) {
	ps, sim := New(nil)
	t.Cleanup(ps.Shutdown)
	ks := []cid.Cid{cidsOf(newBlocks(t, 1)...)[0]}
	base := heaptest.Live()
	for i := range uint64(burst) {
		sim.RecordSessionInterest(i, ks)
	}
	for i := range uint64(burst) {
		sim.RemoveSession(i)
	}
	heaptest.RequireBackTo(t, base, 256<<10)
	runtime.KeepAlive(sim)
}
