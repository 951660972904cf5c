package notifier_test

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"

	"github.com/bitswapsync/notifier"
)

// A Publish that reaches one subscription allocates only the message it
// hands out: the op keeps a copy of the published message, not a pointer to
// Publish's parameter, which would move every message to the heap. (Under
// the race detector sync.Pool drops ops at random, so the count is not
// Publish's own.)
func TestPublish_OneTargetAllocatesOnlyTheMessage(t *testing.T) {
	if raceDetector {
		t.Skip("sync.Pool drops ops at random under the race detector")
	}
	ctx := context.Background()
	n := notifier.New(nil)
	t.Cleanup(func() { _ = n.Close() })
	s, err := n.NewSubscription(1)
	if err != nil {
		t.Fatal(err)
	}
	k := blocks.NewBlock([]byte("allocs: one target")).Cid()
	if err := s.Subscribe(ctx, k); err != nil {
		t.Fatal(err)
	}
	msg := notifier.ResponseMessage{From: "peer", Haves: []cid.Cid{k}} // a HAVE keeps the want
	allocs := testing.AllocsPerRun(100, func() {
		if err := n.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
		if got := <-s.Messages(); len(got.Haves) != 1 || got.Haves[0] != k {
			t.Fatalf("got %+v, want the HAVE of %s", got, k)
		}
	})
	if allocs != 1 {
		t.Fatalf("a Publish to one subscription made %v allocations, want 1 (the message's key slice)", allocs)
	}
}
