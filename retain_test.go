package notifier

import (
	"runtime"
	"testing"
	"weak"
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
