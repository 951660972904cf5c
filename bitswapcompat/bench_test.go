package bitswapcompat

import (
	"context"
	"fmt"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	notifier "github.com/bitswapsync/notifier"
)

// BenchmarkPubSub_GetBlock is one request of one key as the client makes it:
// Subscribe, RecordSessionInterest, SplitWantedUnwanted, Publish, read,
// RemoveSessionWants.
func BenchmarkPubSub_GetBlock(b *testing.B) {
	for _, bufSize := range []int{notifier.DefaultBufferSize, 0} {
		b.Run(map[int]string{0: "buffer=0", notifier.DefaultBufferSize: "buffer=default"}[bufSize], func(b *testing.B) {
			ps, sim := New(nil, notifier.WithBufferSize(bufSize))
			defer ps.Shutdown()
			blks := newBlocks(b, 1024)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				blk := blks[i%len(blks)]
				i++
				k := []cid.Cid{blk.Cid()}
				ch := ps.Subscribe(ctx, k...)
				sim.RecordSessionInterest(1, k)
				wanted, _ := sim.SplitWantedUnwanted([]blocks.Block{blk})
				ps.Publish(peerA, wanted...)
				<-ch
				sim.RemoveSessionWants(1, k)
			}
		})
	}
}

// BenchmarkPubSub_WaitingCall is the memory a waiting call holds.
func BenchmarkPubSub_WaitingCall(b *testing.B) {
	ps := NewPubSub(nil)
	defer ps.Shutdown()
	blks := newBlocks(b, b.N)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ps.Subscribe(ctx, blks[i].Cid())
	}
}

// BenchmarkSIM_FilterSessionInterested is the query that boxo's
// Session.ReceiveFrom makes of every message: a message's blocks, HAVEs and
// DONT_HAVEs, in sets of the sizes named, of a session that wants 32 keys,
// among them every block of the message and its first HAVE.
func BenchmarkSIM_FilterSessionInterested(b *testing.B) {
	for _, sz := range [][3]int{{1, 0, 0}, {1, 1, 1}, {16, 4, 4}} {
		b.Run(fmt.Sprintf("sets=%d-%d-%d", sz[0], sz[1], sz[2]), func(b *testing.B) {
			sim := NewSessionInterestManager()
			ks := cidsOf(newBlocks(b, 64)...)
			sim.RecordSessionInterest(1, ks[:32])
			sets := [][]cid.Cid{ks[16 : 16+sz[0]], ks[31 : 31+sz[1]], ks[40 : 40+sz[2]]}
			b.ReportAllocs()
			for b.Loop() {
				_ = sim.FilterSessionInterested(1, sets...)
			}
		})
	}
}
