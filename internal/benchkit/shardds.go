package benchkit

import (
	"context"
	"hash/maphash"
	"sync"

	datastore "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// dsShards is the number of shards of a ShardedDatastore: enough that the
// puts of a few concurrent PutMany calls (16 keys each) rarely meet.
const dsShards = 256

// ShardedDatastore is an in-memory go-datastore Batching that does not
// serialise its callers: its keys are spread over shards, each with a lock of
// its own, so that calls on keys of different shards run in parallel, where
// dssync.MutexWrap(datastore.NewMapDatastore()) runs one call at a time. It
// is the datastore of the store kind memconc. The zero value is not ready:
// use NewShardedDatastore. All methods are safe for concurrent use; none
// blocks except on the lock of one shard, held only for a map operation.
//
// Batch returns go-datastore's basic batch, which applies its operations one
// by one at Commit: a batch is not atomic, as the Batching interface allows.
// Query reads the shards one after the other, so it sees no single instant.
type ShardedDatastore struct {
	seed   maphash.Seed
	shards [dsShards]dsShard
}

type dsShard struct {
	mu sync.RWMutex             // guards m
	m  map[datastore.Key][]byte // values as Put was given them
	_  [32]byte                 // 64 bytes a shard: two shards' locks share no cache line
}

var _ datastore.Batching = (*ShardedDatastore)(nil)

// NewShardedDatastore returns an empty ShardedDatastore.
func NewShardedDatastore() *ShardedDatastore {
	d := &ShardedDatastore{seed: maphash.MakeSeed()}
	for i := range d.shards {
		d.shards[i].m = make(map[datastore.Key][]byte)
	}
	return d
}

func (d *ShardedDatastore) shard(k datastore.Key) *dsShard {
	return &d.shards[maphash.String(d.seed, k.String())%dsShards]
}

// Put stores value under key. Like MapDatastore, the store of mem, it keeps
// value itself, not a copy (blocks are immutable): the caller must not
// modify it afterwards.
func (d *ShardedDatastore) Put(_ context.Context, key datastore.Key, value []byte) error {
	s := d.shard(key)
	s.mu.Lock()
	s.m[key] = value
	s.mu.Unlock()
	return nil
}

// Get returns the value of key, or datastore.ErrNotFound. The caller must
// not modify it.
func (d *ShardedDatastore) Get(_ context.Context, key datastore.Key) ([]byte, error) {
	s := d.shard(key)
	s.mu.RLock()
	v, ok := s.m[key]
	s.mu.RUnlock()
	if !ok {
		return nil, datastore.ErrNotFound
	}
	return v, nil
}

// Has reports whether key is stored.
func (d *ShardedDatastore) Has(_ context.Context, key datastore.Key) (bool, error) {
	s := d.shard(key)
	s.mu.RLock()
	_, ok := s.m[key]
	s.mu.RUnlock()
	return ok, nil
}

// GetSize returns the size of key's value, or -1 and datastore.ErrNotFound.
func (d *ShardedDatastore) GetSize(_ context.Context, key datastore.Key) (int, error) {
	s := d.shard(key)
	s.mu.RLock()
	v, ok := s.m[key]
	s.mu.RUnlock()
	if !ok {
		return -1, datastore.ErrNotFound
	}
	return len(v), nil
}

// Delete removes key; a missing key is no error.
func (d *ShardedDatastore) Delete(_ context.Context, key datastore.Key) error {
	s := d.shard(key)
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
	return nil
}

// Query returns the entries that q selects, read shard by shard.
func (d *ShardedDatastore) Query(_ context.Context, q dsq.Query) (dsq.Results, error) {
	var es []dsq.Entry
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.RLock()
		for k, v := range s.m {
			e := dsq.Entry{Key: k.String(), Size: len(v)}
			if !q.KeysOnly {
				e.Value = v
			}
			es = append(es, e)
		}
		s.mu.RUnlock()
	}
	return dsq.NaiveQueryApply(q, dsq.ResultsWithEntries(q, es)), nil
}

// Batch returns a batch that applies its operations to d at Commit.
func (d *ShardedDatastore) Batch(context.Context) (datastore.Batch, error) {
	return datastore.NewBasicBatch(d), nil
}

// Sync does nothing: the values are in memory.
func (d *ShardedDatastore) Sync(context.Context, datastore.Key) error { return nil }

// Close does nothing.
func (d *ShardedDatastore) Close() error { return nil }
