package notifier_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	blockstore "github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	notifier "github.com/bitswapsync/notifier"
)

// TestStall_SubscribeTakesEffectAtOneInstantDespiteGC pins the cause of a
// rare failure of TestLinearizability (seen once in about 20 runs, with two
// shards, before any stall was added to it): a Subscribe of several keys
// reads the blockstore one key at a time, so a garbage collection (or any
// writer other than the Notifier) that changes the store between two of its
// Gets makes it act on a blockstore that never existed. SPEC G1 says that
// every operation takes effect at one instant; doc.go excepts only the read
// calls (Wanted, Interested, AppendInterested, Wants) from being linearizable
// with a blockstore changed by others.
//
// Here the store holds k0 and k1; Subscribe(k0, k1) finds k0, then stalls
// before its Get of k1 while both blocks are deleted. Taking effect at one
// instant, it would find both blocks (before the deletes) or neither (after);
// it finds k0 alone.
func TestStall_SubscribeTakesEffectAtOneInstantDespiteGC(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
		blks := testBlocks("gc between gets", 2)
		if err := bs.PutMany(ctx, blks); err != nil {
			t.Fatal(err)
		}
		n := notifier.New(&gateStore{next: bs})
		defer closeOrFail(t, n)
		var mu sync.Mutex
		var got []cid.Cid
		s, err := n.NewSubscriptionFunc(1, func(m notifier.ResponseMessage) {
			mu.Lock()
			defer mu.Unlock()
			for _, b := range m.Blocks {
				got = append(got, b.Cid())
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		p, sctx := newStallPoint(ctx)
		p.after = 1 // the Get of k1
		done := make(chan error, 1)
		go func() { done <- s.Subscribe(sctx, cidsOf(blks...)...) }()
		synctest.Wait()
		if !p.parked() {
			t.Fatal("Subscribe did not reach its second Get")
		}
		for _, b := range blks {
			if err := bs.DeleteBlock(ctx, b.Cid()); err != nil {
				t.Fatal(err)
			}
		}
		p.free(ioPass)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		both, neither := cidsOf(blks...), []cid.Cid(nil)
		if !slices.Equal(got, both) && !slices.Equal(got, neither) {
			t.Errorf("Subscribe(k0, k1) delivered %v: the blockstore held k0 without k1 at no instant of the call "+
				"(it held both, then k1 alone, then neither)", names(blks, got))
		}
	})
}

func names(blks []blocks.Block, keys []cid.Cid) []string {
	var ns []string
	for _, k := range keys {
		ns = append(ns, "k"+string(rune('0'+slices.IndexFunc(blks, func(b blocks.Block) bool { return b.Cid() == k }))))
	}
	return ns
}
