package notifier

import (
	"fmt"
	"slices"
	"testing"

	cid "github.com/ipfs/go-cid"
)

// BenchmarkUnsubscribeOneKeyOfMany: subs subscriptions want one key, and
// each round ends their wants one by one, the newest first (each the last
// of the key's list: the order in which a scan of the list costs most).
// ns/end is the time of one Unsubscribe.
func BenchmarkUnsubscribeOneKeyOfMany(b *testing.B) {
	for _, subs := range []int{100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			n := New(nil)
			defer func() { _ = n.Close() }()
			k := mkBlocks("fan-in bench", 1)[0].Cid()
			ss := make([]*Subscription, subs)
			for i := range ss {
				var err error
				if ss[i], err = n.NewSubscriptionFunc(uint64(i), func(ResponseMessage) {}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for _, s := range ss {
					if err := s.Subscribe(ctx, k); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				for _, s := range slices.Backward(ss) {
					s.Unsubscribe(k)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/end")
		})
	}
}

// BenchmarkDeliverToOneLargeSubscription: one subscription wants keys keys,
// and each round wants keys again (one Subscribe) and gets their blocks in
// one-block messages, through a delivery function, without a store. The
// rounds take turns between sets sets of keys: with 1, the subscription
// wants the same keys every round; with 8, it goes on to other keys, as a
// session fetching a DAG does, and comes back to a set only every eighth
// round. ns/block is the round's whole time per block: the deliveries, the
// compaction of the subscription's map of keys that delivery makes once
// the map is above shrink.Floor entries or all stale (accept), and the
// Subscribe that records the keys.
func BenchmarkDeliverToOneLargeSubscription(b *testing.B) {
	for _, keys := range []int{1_024, 16_384} {
		for _, sets := range []int{1, 8} {
			b.Run(fmt.Sprintf("keys=%d/sets=%d", keys, sets), func(b *testing.B) {
				n := New(nil)
				defer func() { _ = n.Close() }()
				s, err := n.NewSubscriptionFunc(1, func(ResponseMessage) {})
				if err != nil {
					b.Fatal(err)
				}
				type set struct {
					keys []cid.Cid
					msgs []ResponseMessage
				}
				all := make([]set, sets)
				for i := range all {
					blks := mkBlocks(fmt.Sprintf("large subscription bench %d", i), keys)
					all[i].keys = keysOf(blks)
					for j := range blks {
						all[i].msgs = append(all[i].msgs, ResponseMessage{From: "peer", Blocks: blks[j : j+1]})
					}
				}
				b.ResetTimer()
				for r := range b.N {
					set := &all[r%sets]
					if err := s.Subscribe(ctx, set.keys...); err != nil {
						b.Fatal(err)
					}
					for _, m := range set.msgs {
						if err := n.Publish(ctx, m); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/block")
			})
		}
	}
}
