package notifier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	flatfs "github.com/ipfs/go-ds-flatfs"
	ipfsbs "github.com/ipfs/go-ipfs-blockstore"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/waitmu"
)

// hang is how long a test waits for something that must happen before it
// declares the code under test hung. It is never waited out in a passing run.
const hang = 10 * time.Second

var errBoom = errors.New("boom")

// storeCase is one of the blockstores every storage-related test runs with.
type storeCase struct {
	name string
	open func(t *testing.T) Blockstore
}

var storeCases = []storeCase{
	{"boxo", func(t *testing.T) Blockstore {
		return blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	}},
	{"go-ipfs-blockstore", func(t *testing.T) Blockstore {
		return ipfsbs.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	}},
	{"flatfs", func(t *testing.T) Blockstore {
		d, err := flatfs.CreateOrOpen(t.TempDir(), flatfs.NextToLast(2), false)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, d.Close()) })
		return blockstore.NewBlockstore(d, blockstore.NoPrefix()) // flatfs keys are one path component, as IPFS mounts it
	}},
}

// eachStore runs f once per blockstore implementation.
func eachStore(t *testing.T, f func(t *testing.T, bs Blockstore)) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) { f(t, sc.open(t)) })
	}
}

func memStore() Blockstore { return storeCases[0].open(nil) }

// hookStore wraps a Blockstore with hooks that run before the call is passed
// on; a hook's error is returned instead.
type hookStore struct {
	Blockstore
	onGet     func(c cid.Cid) error
	afterGet  func(c cid.Cid) // called once the Get has read, before it returns
	onPutMany func(blks []blocks.Block) error
}

func (h *hookStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if h.onGet != nil {
		if err := h.onGet(c); err != nil {
			return nil, err
		}
	}
	b, err := h.Blockstore.Get(ctx, c)
	if h.afterGet != nil {
		h.afterGet(c)
	}
	return b, err
}

func (h *hookStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	if h.onPutMany != nil {
		if err := h.onPutMany(blks); err != nil {
			return err
		}
	}
	return h.Blockstore.PutMany(ctx, blks)
}

// mkBlocks returns n distinct blocks whose contents start with prefix.
func mkBlocks(prefix string, n int) []blocks.Block {
	out := make([]blocks.Block, n)
	for i := range out {
		out[i] = blocks.NewBlock([]byte(fmt.Sprintf("%s/%d", prefix, i)))
	}
	return out
}

func keysOf(blks []blocks.Block) []cid.Cid {
	out := make([]cid.Cid, len(blks))
	for i, b := range blks {
		out[i] = b.Cid()
	}
	return out
}

// cancelLog records what the cancel function receives.
type cancelLog struct {
	mu   sync.Mutex
	keys []cid.Cid
}

func (c *cancelLog) record(keys []cid.Cid) {
	c.mu.Lock()
	c.keys = append(c.keys, keys...)
	c.mu.Unlock()
}

// take returns the keys recorded so far, sorted, and forgets them.
func (c *cancelLog) take() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.keys
	c.keys = nil
	slices.SortFunc(out, cmpKey)
	return out
}

func cmpKey(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) }

func sorted(keys ...cid.Cid) []cid.Cid {
	out := slices.Clone(keys)
	slices.SortFunc(out, cmpKey)
	return out
}

// newWithCancels returns a Notifier whose cancels are recorded.
func newWithCancels(t *testing.T, bs Blockstore, opts ...Option) (*Notifier, *cancelLog) {
	log := &cancelLog{}
	n := New(bs, append([]Option{WithCancelFunc(log.record)}, opts...)...)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n, log
}

func mustSub(t *testing.T, n *Notifier, id uint64) *Subscription {
	t.Helper()
	s, err := n.NewSubscription(id)
	require.NoError(t, err)
	return s
}

// recv returns the next message of s, failing the test if none comes.
func recv(t *testing.T, s *Subscription) ResponseMessage {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		require.True(t, ok, "Messages() closed, Err() = %v", s.Err())
		return m
	case <-time.After(hang):
		t.Fatalf("subscription %d: no message", s.ID())
		return ResponseMessage{}
	}
}

// none asserts that no message is waiting for s. Messages are in the channel
// by the time the operation that delivered them returns (while the buffer
// has room), so this is exact for tests that stay within the buffer.
func none(t *testing.T, s *Subscription) {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		if ok {
			t.Fatalf("subscription %d: unexpected message %+v", s.ID(), m)
		}
	default:
	}
}

// waitClosed reads s until Messages() is closed and returns what it read.
func waitClosed(t *testing.T, s *Subscription) []ResponseMessage {
	t.Helper()
	var got []ResponseMessage
	deadline := time.After(hang)
	for {
		select {
		case m, ok := <-s.Messages():
			if !ok {
				return got
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("subscription %d: Messages() not closed", s.ID())
		}
	}
}

// done waits for ch to be closed, failing the test if it is not.
func done(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hang):
		t.Fatalf("hung: %s", what)
	}
}

// isReserved reports whether an operation holds a reservation on k.
func (n *Notifier) isReserved(k cid.Cid) bool {
	sh := &n.shards[n.shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.idx.res.get(k) != nil
}

// shardHeld reports whether the lock of k's shard is held by someone. It
// must only be called while the holder cannot release it (for example from
// inside a blockstore or cancel hook that the holder is waiting for).
func (n *Notifier) shardHeld(k cid.Cid) bool {
	mu := &n.shards[n.shardOf(k)].mu
	if mu.TryLock() {
		mu.Unlock()
		return false
	}
	return true
}

// keysInOtherShards returns count keys in count shards of their own: none
// in k's, no two in the same one. (Two in one shard let an operation that
// holds one key's shard block a test's call on the other: see
// TestSubscribe_FoundSharedBlockIsQueuedWithTheWants, which hung 1 run in
// about 50 before.)
func keysInOtherShards(n *Notifier, k cid.Cid, prefix string, count int) []blocks.Block {
	used := map[int32]bool{n.shardOf(k): true}
	var out []blocks.Block
	for i := 0; len(out) < count; i++ {
		b := blocks.NewBlock([]byte(fmt.Sprintf("%s/%d", prefix, i)))
		if sh := n.shardOf(b.Cid()); !used[sh] {
			used[sh] = true
			out = append(out, b)
		}
	}
	return out
}

// waitWaiters waits until want goroutines wait for mu (waitmu.Await).
func waitWaiters(t *testing.T, mu *waitmu.Mutex, want int) {
	t.Helper()
	waitmu.Await(t, mu, want)
}

// shardLock is the lock of k's shard.
func shardLock(n *Notifier, k cid.Cid) *waitmu.Mutex { return &n.shards[n.shardOf(k)].mu }

// blockShard holds the lock of shard sh until the returned func is called.
// (The blockstore runs outside the shard locks, so a stalled Get no longer
// holds one; the test takes it itself.)
func blockShard(t *testing.T, n *Notifier, _ *hookStore, sh int32) (unblock func()) {
	t.Helper()
	n.shards[sh].mu.Lock()
	var once sync.Once
	unblock = func() { once.Do(n.shards[sh].mu.Unlock) }
	t.Cleanup(unblock)
	return unblock
}

// blockInShard returns a block whose key is in shard sh (in == true) or not.
func blockInShard(n *Notifier, prefix string, sh int32, in bool) blocks.Block {
	for i := 0; ; i++ {
		b := blocks.NewBlock([]byte(fmt.Sprintf("%s/%d", prefix, i)))
		if (n.shardOf(b.Cid()) == sh) == in {
			return b
		}
	}
}

// sameBucket returns a block, other than k's, whose key has k's version
// bucket (bucketOf), its contents starting with prefix.
func sameBucket(t *testing.T, k cid.Cid, prefix string) blocks.Block {
	t.Helper()
	for i := range 10000 {
		b := blocks.NewBlock([]byte(fmt.Sprintf("%s/%d", prefix, i)))
		if b.Cid() != k && bucketOf(b.Cid()) == bucketOf(k) {
			return b
		}
	}
	t.Fatal("no key in the bucket")
	return nil
}
