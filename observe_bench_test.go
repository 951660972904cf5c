package notifier

import (
	"context"
	"testing"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// BenchmarkObserve_PublishHooks is what the hooks of one W2-sized Publish
// cost (16 blocks stored, 16 subscriptions reached, 16 cancels), apart from
// the operation itself: begin, the blockstore clock, collected, done, and
// finished with its gauge refresh. metrics=off is a Notifier without
// WithMetrics under a context with no span. Compare with W2's ns/msg.
func BenchmarkObserve_PublishHooks(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "metrics=off"
		var opts []Option
		if on {
			name = "metrics=on"
			promtest.Registry(b)
			opts = append(opts, WithMetrics(kuboScope()))
		}
		b.Run(name, func(b *testing.B) {
			n := New(memStore(), opts...)
			defer func() { _ = n.Close() }()
			ctx := context.Background()
			blks := mkBlocks("hooks", 16)
			msg := ResponseMessage{From: "peer", Blocks: blks}
			o := n.getOp()
			n.shardKeys(o, &msg)
			o.store = append(o.store, blks...)
			for i := range 16 {
				o.targets = append(o.targets, target{nb: 1})
				o.cancels = append(o.cancels, blks[i].Cid())
			}
			b.ReportAllocs()
			for b.Loop() {
				o.probe = probe{}
				o.probe.begin(n, ctx)
				o.probe.collected(n, o, &msg)
				t := o.probe.clock()
				o.probe.storeDone(ctx, t, len(o.store), nil)
				n.handedOver(o)
				o.probe.done(opPublish, o)
			}
		})
	}
}
