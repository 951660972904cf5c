// Package benchkit holds the workloads of SPEC.md's Performance section and
// the adapters that run them, the same way, on the Notifier, on the two-layer
// baseline of internal/legacy and on a floor (one map lookup and one buffered
// channel send per delivery). The root package's bench_test.go drives them;
// a simulator can reuse them.
//
// Nothing here is safe for concurrent use unless its doc says so.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	flatfs "github.com/ipfs/go-ds-flatfs"

	"github.com/bitswapsync/notifier"
	"github.com/bitswapsync/notifier/internal/legacy"
)

// Store kinds.
const (
	StoreNone   = "none"   // notify only: New(nil), legacy.NewClient(nil)
	StoreMem    = "mem"    // boxo blockstore over a mutex-wrapped map datastore
	StoreFlatFS = "flatfs" // boxo blockstore, without prefix, over go-ds-flatfs on disk
	// StoreMemConc is boxo's blockstore, without prefix, over a
	// ShardedDatastore: in memory like mem, but puts of different keys run
	// in parallel.
	StoreMemConc = "memconc"
	// StoreSlowPut is memconc whose PutMany (and Put) first sleeps SlowPut:
	// a store with I/O latency, whose calls overlap when their callers do.
	StoreSlowPut = "slowput"
	// StoreNop is a blockstore that keeps nothing, finds nothing and costs
	// nothing. The implementations take their blockstore paths as with a
	// real store (the Notifier reserves the keys, releases its locks, calls
	// PutMany, locks again), so a workload on nop beside none measures what
	// those paths cost, and beside mem what the store's own work adds.
	StoreNop = "nop"
)

// SlowPut is how long a put of StoreSlowPut waits before storing.
const SlowPut = time.Millisecond

// Store is the blockstore of one benchmark run. The zero of its kind, none,
// stores nothing.
type Store struct {
	Kind  string
	bs    blockstore.Blockstore // nil for StoreNone
	close func() error
}

// OpenStore opens a store of the given kind; flatfs lives in dir, which must
// be empty or a flatfs directory made with the same sharding.
func OpenStore(kind, dir string) (*Store, error) {
	st := &Store{Kind: kind, close: func() error { return nil }}
	switch kind {
	case StoreNone:
	case StoreMem:
		st.bs = blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
	case StoreMemConc:
		st.bs = blockstore.NewBlockstore(NewShardedDatastore(), blockstore.NoPrefix())
	case StoreNop:
		st.bs = nopStore{}
	case StoreSlowPut:
		st.bs = slowPut{blockstore.NewBlockstore(NewShardedDatastore(), blockstore.NoPrefix())}
	case StoreFlatFS:
		d, err := flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), false)
		if err != nil {
			return nil, fmt.Errorf("benchkit: open flatfs in %s: %w", dir, err)
		}
		// flatfs keys are one path component, as IPFS mounts it.
		st.bs, st.close = blockstore.NewBlockstore(d, blockstore.NoPrefix()), d.Close
	default:
		return nil, fmt.Errorf("benchkit: unknown store kind %q", kind)
	}
	return st, nil
}

// Notifier returns the store for notifier.New: nil for StoreNone.
func (s *Store) Notifier() notifier.Blockstore {
	if s.bs == nil {
		return nil
	}
	return s.bs
}

// Legacy returns the store for legacy.NewClient: nil for StoreNone.
func (s *Store) Legacy() legacy.Blockstore {
	if s.bs == nil {
		return nil
	}
	return s.bs
}

// PutMany stores blks; it does nothing for StoreNone.
func (s *Store) PutMany(ctx context.Context, blks []blocks.Block) error {
	if s.bs == nil || len(blks) == 0 {
		return nil
	}
	return s.bs.PutMany(ctx, blks)
}

// Get is the blockstore's Get; for StoreNone it reports nothing found.
func (s *Store) Get(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	if s.bs == nil {
		return nil, datastore.ErrNotFound
	}
	return s.bs.Get(ctx, k)
}

// Delete removes the blocks of keys, so that a new round can want them again
// without finding them stored. Missing blocks are fine. For flatfs it then
// flushes the file system, so that a round does not pay for the writeback of
// the rounds (or benchmarks) before it.
func (s *Store) Delete(ctx context.Context, keys []cid.Cid) error {
	if s.bs == nil {
		return nil
	}
	for _, k := range keys {
		if err := s.bs.DeleteBlock(ctx, k); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return fmt.Errorf("benchkit: delete %s: %w", k, err)
		}
	}
	if s.Kind == StoreFlatFS {
		syscall.Sync()
	}
	return nil
}

// Close closes the datastore (flatfs stops its checkpoint goroutine).
func (s *Store) Close() error { return s.close() }

// nopStore is StoreNop's blockstore.
type nopStore struct{}

func (nopStore) DeleteBlock(context.Context, cid.Cid) error { return nil }
func (nopStore) Has(context.Context, cid.Cid) (bool, error) { return false, nil }
func (nopStore) Get(context.Context, cid.Cid) (blocks.Block, error) {
	return nil, datastore.ErrNotFound
}
func (nopStore) GetSize(context.Context, cid.Cid) (int, error) { return -1, datastore.ErrNotFound }
func (nopStore) Put(context.Context, blocks.Block) error       { return nil }
func (nopStore) PutMany(context.Context, []blocks.Block) error { return nil }
func (nopStore) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	ch := make(chan cid.Cid)
	close(ch)
	return ch, nil
}

// slowPut is a blockstore whose puts sleep SlowPut before storing, holding no
// lock, so that concurrent puts overlap their waits.
type slowPut struct{ blockstore.Blockstore }

func (s slowPut) Put(ctx context.Context, b blocks.Block) error {
	time.Sleep(SlowPut)
	return s.Blockstore.Put(ctx, b)
}

func (s slowPut) PutMany(ctx context.Context, blks []blocks.Block) error {
	time.Sleep(SlowPut)
	return s.Blockstore.PutMany(ctx, blks)
}
