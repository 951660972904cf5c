package legacy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockstore"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	datastore "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/stretchr/testify/require"
)

// waitLimit bounds every wait in these tests; it only turns a hang into a
// failure and is never what makes a test pass.
const waitLimit = 5 * time.Second

func newStore() blockstore.Blockstore {
	return blockstore.NewBlockstore(dssync.MutexWrap(datastore.NewMapDatastore()))
}

func mkBlock(s string) blocks.Block { return blocks.NewBlock([]byte(s)) }

// recv returns the next value of ch and fails if ch is closed or stays empty.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		require.True(t, ok, "channel closed")
		return v
	case <-time.After(waitLimit):
		t.Fatal("nothing received")
		panic("unreachable")
	}
}

// drain returns what ch still yields until it is closed.
func drain[T any](t *testing.T, ch <-chan T) []T {
	t.Helper()
	var got []T
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, v)
		case <-time.After(waitLimit):
			t.Fatal("channel not closed")
		}
	}
}

// cancelLog records the cancel function's calls.
type cancelLog struct{ ch chan []cid.Cid }

func newCancelLog() *cancelLog { return &cancelLog{ch: make(chan []cid.Cid, 1024)} }

func (l *cancelLog) option() Option {
	return WithCancelFunc(func(ks []cid.Cid) { l.ch <- slices.Clone(ks) })
}

// hookStore runs afterGet once Get has looked a key up, to let a test act
// between GetBlocks' blockstore check and its Subscribe.
type hookStore struct {
	Blockstore
	afterGet func(c cid.Cid)
}

func (h hookStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	b, err := h.Blockstore.Get(ctx, c)
	h.afterGet(c)
	return b, err
}

var errBoom = errors.New("boom")

// failStore fails every PutMany.
type failStore struct{ Blockstore }

func (failStore) PutMany(context.Context, []blocks.Block) error { return errBoom }

// drainUpdates reads s.Updates until it is closed, in its own goroutine.
func drainUpdates(s *Session, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range s.Updates() {
		}
	}()
}
