package notifier

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// Helpers of the tests of interest subscriptions (NewInterest) and requests
// (NewRequest).

func mustInterest(t *testing.T, n *Notifier, id uint64) *Subscription {
	t.Helper()
	s, err := n.NewInterest(id)
	require.NoError(t, err)
	return s
}

func mustRequest(t *testing.T, n *Notifier, f func(ResponseMessage)) *Subscription {
	t.Helper()
	s, err := n.NewRequest(f)
	require.NoError(t, err)
	return s
}

// countStore counts the calls made to the Blockstore it wraps and records the
// keys of the blocks passed to PutMany.
type countStore struct {
	Blockstore
	has, get, putMany atomic.Int64

	mu  sync.Mutex // guards put
	put []cid.Cid
}

func newCountStore() *countStore { return &countStore{Blockstore: memStore()} }

func (c *countStore) Has(ctx context.Context, k cid.Cid) (bool, error) {
	c.has.Add(1)
	return c.Blockstore.Has(ctx, k)
}

func (c *countStore) Get(ctx context.Context, k cid.Cid) (blocks.Block, error) {
	c.get.Add(1)
	return c.Blockstore.Get(ctx, k)
}

func (c *countStore) PutMany(ctx context.Context, blks []blocks.Block) error {
	c.putMany.Add(1)
	c.mu.Lock()
	c.put = append(c.put, keysOf(blks)...)
	c.mu.Unlock()
	return c.Blockstore.PutMany(ctx, blks)
}

// takePut returns the keys passed to PutMany so far, in call order, and
// forgets them.
func (c *countStore) takePut() []cid.Cid {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.put
	c.put = nil
	return out
}

// calls returns the number of calls of each method so far.
func (c *countStore) calls() (has, get, putMany int64) {
	return c.has.Load(), c.get.Load(), c.putMany.Load()
}

// logOf records values handed to a function from any goroutine.
type logOf[T any] struct {
	mu   sync.Mutex
	vals []T
}

func (l *logOf[T]) record(v T) {
	l.mu.Lock()
	l.vals = append(l.vals, v)
	l.mu.Unlock()
}

// take returns the values recorded so far and forgets them.
func (l *logOf[T]) take() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.vals
	l.vals = nil
	return out
}

// msgLog records the messages handed to a subscription that takes them
// through a function.
type msgLog = logOf[ResponseMessage]

// spyMessages replaces the function through which s takes its messages (s being of
// NewSubscriptionFunc, NewInterest or NewRequest) with one that records
// them, so that a test can see what the Notifier hands s even where the
// public API discards it. Call it before s is used by anyone.
func spyMessages(t *testing.T, s *Subscription) *msgLog {
	t.Helper()
	require.NotNil(t, s.fn, "spy needs a subscription that takes messages through a function")
	l := &msgLog{}
	s.mu.Lock()
	s.fn = l.record
	s.mu.Unlock()
	return l
}

// openAndEmpty asserts that Messages() of s is open and holds nothing: the done
// signal of a live subscription that takes no messages from its channel.
func openAndEmpty(t *testing.T, s *Subscription) {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		if ok {
			t.Fatalf("subscription %d: unexpected message %+v", s.ID(), m)
		}
		t.Fatalf("subscription %d: Messages() closed, Err() = %v", s.ID(), s.Err())
	default:
	}
}

// closedNow asserts that Messages() of s is already closed.
func closedNow(t *testing.T, s *Subscription) {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		require.False(t, ok, "subscription %d: unexpected message %+v", s.ID(), m)
	default:
		t.Fatalf("subscription %d: Messages() still open", s.ID())
	}
}

// keyCount counts, per key, how often a key was reported.
type keyCount struct {
	mu sync.Mutex
	n  map[cid.Cid]int
}

func newKeyCount() *keyCount { return &keyCount{n: make(map[cid.Cid]int)} }

func (c *keyCount) add(keys []cid.Cid) {
	c.mu.Lock()
	for _, k := range keys {
		c.n[k]++
	}
	c.mu.Unlock()
}

func (c *keyCount) get(k cid.Cid) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// requireIndexEmpty asserts that the index holds no want of either kind, no
// reservation or mark of an operation, and no positions of subscribers.
func requireIndexEmpty(t *testing.T, n *Notifier) {
	t.Helper()
	require.Equal(t, Stats{}, n.Stats())
	for i := range n.shards {
		require.Empty(t, n.shards[i].idx.wants, "shard %d: wants", i)
		require.Empty(t, n.shards[i].idx.held, "shard %d: held", i)
		require.True(t, n.shards[i].idx.res.empty(), "shard %d: reservations", i)
		require.Empty(t, n.shards[i].idx.marks, "shard %d: marks", i)
		require.Empty(t, n.shards[i].idx.big, "shard %d: positions of subscribers", i)
	}
}

// sortedOrNil sorts keys in place, and returns nil for no keys, so that a
// result compares equal to what a model computes whether it is nil or empty.
func sortedOrNil(keys []cid.Cid) []cid.Cid {
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, cmpKey)
	return keys
}
