package notifier_test

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

// BenchmarkLaggingConsumer measures the path of a consumer that lags: every
// message goes through the subscription's backlog and its drain goroutine.
// One op is a burst of 64 HAVEs of the key a subscription wants, published
// while its consumer does not read (its channel is unbuffered), then read by
// the consumer; ns/msg is per message.
func BenchmarkLaggingConsumer(b *testing.B) {
	const burst = 64
	ctx := context.Background()
	n := notifier.New(nil, notifier.WithBufferSize(0))
	defer func() { _ = n.Close() }()
	s, err := n.NewSubscription(1)
	if err != nil {
		b.Fatal(err)
	}
	k := blocks.NewBlock([]byte("lagging-consumer")).Cid()
	if err := s.Subscribe(ctx, k); err != nil {
		b.Fatal(err)
	}
	msg := notifier.ResponseMessage{From: "peer", Haves: []cid.Cid{k}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for range burst {
			if err := n.Publish(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		for range burst {
			if _, ok := <-s.Messages(); !ok {
				b.Fatal("Messages() closed")
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*burst), "ns/msg")
}
