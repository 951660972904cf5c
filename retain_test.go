package notifier

import (
	"runtime"
	"testing"
	"weak"

	blocks "github.com/ipfs/go-block-format"
)

// TestEndWant_KeepsNoSubscriptionAlive: a subscription that has ended is
// not kept reachable by the index while another subscription still wants
// one of its keys. The first subscriber of a key is held in the interest's
// inline slot (interest.first); once a second one made the list grow out of
// it, ending the first's want left it there, with its channel and any
// messages still in it, for as long as the key stayed wanted. Found by
// review.
func TestEndWant_KeepsNoSubscriptionAlive(t *testing.T) {
	ends := []struct {
		name string
		end  func(s *Subscription)
	}{
		{"Remove", func(s *Subscription) { s.Remove() }},
		{"ReleaseAll", func(s *Subscription) { s.ReleaseAll() }},
	}
	kinds := []struct {
		name string
		make func(n *Notifier, id uint64) (*Subscription, error)
	}{
		{"channel", (*Notifier).NewSubscription},
		{"interest", (*Notifier).NewInterest},
	}
	for _, kd := range kinds {
		for _, e := range ends {
			t.Run(kd.name+"/"+e.name, func(t *testing.T) {
				n := New(memStore(), WithShards(1))
				t.Cleanup(func() {
					if err := n.Close(); err != nil {
						t.Error(err)
					}
				})
				k := mkBlocks("retain "+kd.name+e.name, 1)[0].Cid()
				subscribe := func(id uint64) *Subscription {
					s, err := kd.make(n, id)
					if err != nil {
						t.Fatal(err)
					}
					if err := s.Subscribe(ctx, k); err != nil {
						t.Fatal(err)
					}
					return s
				}
				first := func() weak.Pointer[Subscription] {
					return weak.Make(subscribe(1))
				}()
				second := subscribe(2)
				e.end(first.Value())
				for range 3 {
					runtime.GC()
				}
				if first.Value() != nil {
					t.Errorf("the ended subscription is still reachable while another wants its key")
				}
				if !second.Wants(k) || (!n.Wanted(k) && !n.Interested(k)) {
					t.Errorf("the other subscription's want of the key is gone")
				}
				runtime.KeepAlive(second)
			})
		}
	}
}

// TestPublish_KeptMessageKeepsNoOtherSubscriptionsBlock: a message that one
// subscription keeps, unread in its channel or kept by its delivery
// function, does not keep reachable a block that the same Publish handed to
// another subscription only. A Publish whose targets got different blocks
// cut all their Blocks from one array, so the kept message kept the whole
// array. Found by review.
func TestPublish_KeptMessageKeepsNoOtherSubscriptionsBlock(t *testing.T) {
	for _, kind := range []string{"channel", "func"} {
		t.Run(kind, func(t *testing.T) {
			n := New(nil, WithShards(1)) // notify-only: no store keeps the blocks
			t.Cleanup(func() {
				if err := n.Close(); err != nil {
					t.Error(err)
				}
			})
			var kept ResponseMessage
			var keeper *Subscription
			var err error
			if kind == "channel" {
				keeper, err = n.NewSubscription(1) // its message stays unread in the channel
			} else {
				keeper, err = n.NewSubscriptionFunc(1, func(m ResponseMessage) { kept = m })
			}
			if err != nil {
				t.Fatal(err)
			}
			x := mkBlocks("kept message "+kind, 1)[0]
			other := func() weak.Pointer[blocks.BasicBlock] {
				y := blocks.NewBlock([]byte("the other's block " + kind))
				s := mustSub(t, n, 2)
				if err := keeper.Subscribe(ctx, x.Cid()); err != nil {
					t.Fatal(err)
				}
				if err := s.Subscribe(ctx, y.Cid()); err != nil {
					t.Fatal(err)
				}
				if err := n.Publish(ctx, ResponseMessage{From: "peer", Blocks: []blocks.Block{x, y}}); err != nil {
					t.Fatal(err)
				}
				if m := recv(t, s); len(m.Blocks) != 1 || m.Blocks[0].Cid() != y.Cid() {
					t.Fatalf("the other subscription got %v", m)
				}
				s.Remove()
				return weak.Make(y)
			}()
			for range 3 {
				runtime.GC()
			}
			if other.Value() != nil {
				t.Errorf("a block handed only to a removed subscription is still reachable, through the message another subscription keeps")
			}
			if kind == "func" && (len(kept.Blocks) != 1 || kept.Blocks[0].Cid() != x.Cid()) {
				t.Errorf("the keeper's delivery function got %v", kept)
			}
			runtime.KeepAlive(keeper)
			runtime.KeepAlive(kept)
		})
	}
}
