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

// TestStall_SubscribeReadsEachKeyAtItsOwnGet pins what a Subscribe of
// several keys promises against a blockstore that others change during the
// call (a garbage collection): it reads the keys one Get at a time, holding
// their reservations, which keep out every writer that goes through the
// Notifier but not a collection; so it sees each key as it was at its own
// Get (doc.go), not at one instant. (Found by the stall mode of the fuzzer's
// harness as the cause of a rare failure of TestLinearizability, whose
// garbage-collecting rounds now subscribe one key at a time.)
//
// Here the store holds k0 and k1; Subscribe(k0, k1) finds k0, then stalls
// before its Get of k1 while both blocks are deleted: it delivers k0, which
// was there at its Get, and records the want of k1, which was not.
func TestStall_SubscribeReadsEachKeyAtItsOwnGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		bs := blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
		blks := testBlocks("gc between gets", 2)
		if err := bs.PutMany(ctx, blks); err != nil {
			t.Fatal(err)
		}
		n := notifier.New(&gateStore{next: bs})
		defer closeOrFail(t, n)
		var got deliveredKeys
		s, err := n.NewSubscriptionFunc(1, got.record)
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
		deleteBlocks(t, ctx, bs, blks) // a garbage collection, past the Notifier
		p.free(ioPass)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		got.mu.Lock()
		defer got.mu.Unlock()
		if want := cidsOf(blks[0]); !slices.Equal(got.keys, want) {
			t.Errorf("Subscribe(k0, k1) delivered %v, want k0 alone (found at its Get, before the deletes)", names(blks, got.keys))
		}
		if s.Wants(blks[0].Cid()) || !s.Wants(blks[1].Cid()) {
			t.Errorf("after the call: wants k0 %v, k1 %v; want false, true", s.Wants(blks[0].Cid()), s.Wants(blks[1].Cid()))
		}
	})
}

// deliveredKeys records the keys of the blocks delivered to a subscription
// function, in the order delivered.
type deliveredKeys struct {
	mu   sync.Mutex // guards keys
	keys []cid.Cid
}

// record is a delivery function: it appends the keys of m's blocks.
func (d *deliveredKeys) record(m notifier.ResponseMessage) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range m.Blocks {
		d.keys = append(d.keys, b.Cid())
	}
}

// deleteBlocks deletes blks from bs directly, as a garbage collection does,
// without the Notifier knowing.
func deleteBlocks(t *testing.T, ctx context.Context, bs blockstore.Blockstore, blks []blocks.Block) {
	t.Helper()
	for _, b := range blks {
		if err := bs.DeleteBlock(ctx, b.Cid()); err != nil {
			t.Fatal(err)
		}
	}
}

func names(blks []blocks.Block, keys []cid.Cid) []string {
	var ns []string
	for _, k := range keys {
		ns = append(ns, "k"+string(rune('0'+slices.IndexFunc(blks, func(b blocks.Block) bool { return b.Cid() == k }))))
	}
	return ns
}
