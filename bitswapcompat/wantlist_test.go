package bitswapcompat

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// callEnd is one way a waiting PubSub call ends.
type callEnd struct {
	name string
	end  func(t *testing.T, w *wiring, cancel context.CancelFunc, ch <-chan blocks.Block, blks []blocks.Block)
}

var callEnds = []callEnd{
	{"delivered", func(t *testing.T, w *wiring, _ context.CancelFunc, ch <-chan blocks.Block, blks []blocks.Block) {
		wanted, _ := w.sim.SplitWantedUnwanted(blks)
		require.Equal(t, blks, wanted, "the call still waits for its blocks")
		w.ps.Publish(peerA, wanted...)
		requireReceived(t, ch, true, blks...)
	}},
	{"ctx done", func(t *testing.T, _ *wiring, cancel context.CancelFunc, ch <-chan blocks.Block, _ []blocks.Block) {
		cancel()
		for range ch { // closed once the call has left the Notifier
		}
	}},
	{"Shutdown", func(t *testing.T, w *wiring, _ context.CancelFunc, ch <-chan blocks.Block, _ []blocks.Block) {
		w.ps.Shutdown()
		requireReceived(t, ch, true)
	}},
}

// boxo's TestWantlistCleanup, in the shared wiring: a GetBlock times out and
// its session cancels its wants, while the request's PubSub call has not
// ended yet (its context's AfterFunc has not run). RemoveSessionWants must
// return the key at once, or the key stays on the wantlist: an earlier
// release held it back until the call ended and returned it from some later,
// unrelated Remove* call. Nothing is returned later. With WithCancelFunc the
// CANCEL goes out when the call ends.
func TestRegression_WantlistCleanupGetsItsCancels(t *testing.T) {
	for _, e := range callEnds {
		t.Run(e.name, func(t *testing.T) {
			eachSharedWiring(t, func(t *testing.T, w *wiring) {
				b := newBlocks(t, 3)
				k := cidsOf(b...)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				ch := w.ps.Subscribe(ctx, k[0])
				w.sim.RecordSessionInterest(1, k[:1])

				got := w.removeWants(t, 1, k[:1])
				if w.log != nil {
					require.Empty(t, got, "the call still wants k[0]")
				} else {
					require.Equal(t, k[:1], got)
				}
				requireReceived(t, ch, false)
				require.Empty(t, w.sim.InterestedSessions(k))

				e.end(t, w, cancel, ch, b[:1])
				if w.log != nil {
					require.Equal(t, k[:1], w.log.since(0), "CANCEL when the call ends")
				}
				requireNothingLater(t, w, k[:1], k[1:])
			})
		})
	}
}

// boxo's TestWantlistClearsOnCancel, in the shared wiring: a session shuts
// down while GetBlocks calls, made with a context that lives on, still wait
// for its keys. RemoveSession must return them all at once; the calls still
// get their blocks.
func TestRegression_WantlistClearsOnCancelGetsItsCancels(t *testing.T) {
	for _, e := range callEnds {
		t.Run(e.name, func(t *testing.T) {
			eachSharedWiring(t, func(t *testing.T, w *wiring) {
				b := newBlocks(t, 6)
				k := cidsOf(b...)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				ch := w.ps.Subscribe(ctx, k[:4]...)
				w.sim.RecordSessionInterest(1, k[:4])
				w.sim.RecordSessionInterest(2, k[3:4])

				got := w.removeSession(t, 1)
				if w.log != nil {
					require.Empty(t, got, "the call still wants them")
				} else {
					require.ElementsMatch(t, k[:3], got, "session 2 still wants k[3]")
				}
				requireReceived(t, ch, false)
				require.Equal(t, []uint64{2}, w.sim.InterestedSessions(k))

				e.end(t, w, cancel, ch, b[:4])
				switch e.name {
				case "Shutdown": // which ends session 2 too
					if w.log != nil {
						require.ElementsMatch(t, k[:4], w.log.since(0), "CANCELs at Shutdown")
					}
				default:
					if w.log != nil {
						require.ElementsMatch(t, k[:3], w.log.since(0), "CANCELs when the call ends")
					}
					require.Equal(t, k[3:4], w.removeSession(t, 2))
				}
				requireNothingLater(t, w, k[:4], k[4:])
			})
		})
	}
}

// requireNothingLater checks that no later Remove* call returns any of done:
// not the sessions that had them, nor a session that records and removes
// fresh keys.
func requireNothingLater(t *testing.T, w *wiring, done, fresh []cid.Cid) {
	t.Helper()
	require.Empty(t, w.removeWants(t, 1, done))
	require.Empty(t, w.removeSession(t, 1))
	require.Empty(t, w.removeSession(t, 2))
	w.ps.mu.Lock()
	shutDown := w.ps.closed
	w.ps.mu.Unlock()
	if !shutDown { // after Shutdown nothing is recorded
		w.sim.RecordSessionInterest(3, fresh[:1])
		require.Equal(t, fresh[:1], w.removeSession(t, 3))
		w.sim.RecordSessionInterest(1, fresh)
		require.Equal(t, fresh, w.removeWants(t, 1, append(slicesCopy(done), fresh...)))
		require.Empty(t, w.removeSession(t, 1))
	}
	w.requireIdle(t)
}
