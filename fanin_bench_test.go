package notifier

import (
	"fmt"
	"slices"
	"testing"
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
