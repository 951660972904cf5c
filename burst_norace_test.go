//go:build !race

package notifier

import (
	"context"
	"runtime"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/bitswapsync/notifier/internal/heaptest"
)

// Not under the race detector: its sync.Pool drops a quarter of what is put
// back, so that a pooled op is never kept long enough to be seen. CI runs
// this file's tests in a step of their own, without -race.

// TestBurst_PooledOpsKeepNoBurst: the op of a local Publish of a burst of
// blocks, whose slices grew to its size, is not pooled again: an op taken from the
// pool by every operation of a busy node would otherwise keep them for
// good.
func TestBurst_PooledOpsKeepNoBurst(t *testing.T) {
	blks := burstBlocks()
	small := mkBlocks("burst small", 1)
	n := newClosedAtEnd(t, discard{}, WithShards(1))
	// One P, so that every operation takes its op from the one pool that
	// the burst's op went back to (sync.Pool keeps one per P).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	base := heaptest.Live()
	if err := n.Publish(ctx, ResponseMessage{Blocks: blks}); err != nil { // local: every block goes to PutMany
		t.Fatal(err)
	}
	// Between collections, operations take an op from the pool and put it
	// back, as a busy node's do; the last measure is one collection after
	// such operations, which leaves the pool's content in the heap.
	for range 3 {
		runtime.GC()
		for range 10 {
			if err := n.Publish(ctx, ResponseMessage{Blocks: small}); err != nil { // local: stored, through an op
				t.Fatal(err)
			}
		}
	}
	heaptest.RequireBackToKeepingPools(t, base, burstSlack)
	runtime.KeepAlive(blks)
}

// discard is a blockstore that holds nothing: every block it is given is
// dropped, and it has none.
type discard struct{}

func (discard) Has(context.Context, cid.Cid) (bool, error) { return false, nil }

func (discard) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (discard) PutMany(context.Context, []blocks.Block) error { return nil }
