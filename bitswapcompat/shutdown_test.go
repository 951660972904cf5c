package bitswapcompat

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/waitmu"
)

// waitWaiters waits until want goroutines wait for mu (waitmu.Await).
func waitWaiters(t *testing.T, mu *waitmu.Mutex, want int) {
	t.Helper()
	waitmu.Await(t, mu, want)
}

// Shutdown closes the channel of every call before it returns, also of a
// call whose ctx was cancelled just before: the ctx's AfterFunc goroutine
// (G) has marked the call ended, and Shutdown (S) finds it so, but G has not
// closed the channel yet. S must wait for G. Found by review: S returned
// with the channel open.
//
// The test holds the call's lock while G, then S, wait for it (a
// sync.Mutex hands itself to its waiters in order, so G gets it first), and
// holds ps.mu while it releases the call's lock: G then parks on ps.mu, with
// the call marked ended. Once S returns, or parks in turn, the test lets G go
// on and requires the channel closed when S has returned.
func TestShutdown_WaitsForACallEndedByItsContext(t *testing.T) {
	ps := NewPubSub(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := ps.Subscribe(ctx, cidsOf(newBlocks(t, 2)...)...)

	ps.mu.Lock()
	require.Len(t, ps.calls, 1)
	var c *call
	for c = range ps.calls {
	}
	ps.mu.Unlock()
	c.mu.Lock()
	cancel()                 // G: the AfterFunc goroutine, which runs c.end
	waitWaiters(t, &c.mu, 1) // G, in c.end
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		ps.Shutdown()
	}()
	waitWaiters(t, &c.mu, 2) // S, behind G: a sync.Mutex wakes its waiters in the order they came

	ps.mu.Lock()
	c.mu.Unlock()
	waitWaiters(t, &ps.mu, 1) // G has c.mu and has marked c ended; S waits for c.mu
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		require.True(t, time.Now().Before(deadline), "Shutdown neither returned nor waited for G")
		select {
		case <-shutdown:
			_, closed := drainNow(ch)
			ps.mu.Unlock()
			require.True(t, closed, "Shutdown returned, but the channel of a call whose ctx was cancelled before it is open")
			return
		default:
		}
		if waitmu.Waiting(&c.mu) == 1 { // S waits for G, on the call's lock, which G holds
			break
		}
	}
	ps.mu.Unlock()
	<-shutdown
	_, closed := drainNow(ch)
	require.True(t, closed, "channel open after Shutdown")
}
