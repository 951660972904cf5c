package bitswapcompat

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/stacks"
)

// waitParked waits until a goroutine's stack contains every string of with
// and none of without (stacks.Parked).
func waitParked(with, without []string) {
	for !stacks.Parked(with, without) {
		runtime.Gosched()
	}
}

// Shutdown closes the channel of every call before it returns, also of a
// call whose ctx was cancelled just before: the ctx's AfterFunc goroutine
// (G) has marked the call ended, and Shutdown (S) finds it so, but G has not
// closed the channel yet. S must wait for G. Found by review: S returned
// with the channel open.
//
// The test holds the call's lock while G, then S, park on it (a
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
	onCall := fmt.Sprintf("lockSlow(%p)", &c.mu)
	onPubSub := fmt.Sprintf("lockSlow(%p)", &ps.mu)

	c.mu.Lock()
	cancel() // G: the AfterFunc goroutine, which runs c.end
	waitParked([]string{stacks.Mutex, onCall, "(*call).end"}, []string{"Shutdown"})
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		ps.Shutdown()
	}()
	waitParked([]string{stacks.Mutex, onCall, "(*call).end", "(*PubSub).Shutdown"}, nil)

	ps.mu.Lock()
	c.mu.Unlock()
	waitParked([]string{stacks.Mutex, onPubSub, "(*call).end"}, []string{"Shutdown"}) // G has marked c ended
	for {
		select {
		case <-shutdown:
			_, closed := drainNow(ch)
			ps.mu.Unlock()
			require.True(t, closed, "Shutdown returned, but the channel of a call whose ctx was cancelled before it is open")
			return
		default:
		}
		// S waits for G: on the call's lock, which G holds, or for the
		// ends in progress.
		if stacks.Parked([]string{stacks.Mutex, onCall, "(*PubSub).Shutdown"}, nil) ||
			stacks.Parked([]string{"[sync.Cond.Wait", "(*PubSub).Shutdown"}, nil) {
			break
		}
		runtime.Gosched()
	}
	ps.mu.Unlock()
	<-shutdown
	_, closed := drainNow(ch)
	require.True(t, closed, "channel open after Shutdown")
}
