package bitswapcompat

import (
	"fmt"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// sessionIDs are session IDs at the edges of uint64, and at the edges of the
// range that an earlier release reserved for PubSub calls (from 1<<63 up).
var sessionIDs = []uint64{0, 1, 1<<63 - 1, 1 << 63, 1<<63 + 1, ^uint64(0) - 1, ^uint64(0)}

// Any uint64 is a session ID, in every wiring, also while PubSub calls wait:
// calls have no session ID, so nothing is reserved for them. (boxo's session
// tests draw their IDs from all of uint64.)
func TestSIM_AnySessionID(t *testing.T) {
	eachWiring(t, func(t *testing.T, w *wiring) {
		b := newBlocks(t, len(sessionIDs)+2)
		k := cidsOf(b...)
		shared, other := k[len(sessionIDs)], b[len(sessionIDs)+1]
		var calls []<-chan blocks.Block
		if w.ps != nil {
			for range 3 {
				calls = append(calls, w.ps.Subscribe(t.Context(), other.Cid()))
			}
		}
		for i, ses := range sessionIDs {
			w.sim.RecordSessionInterest(ses, []cid.Cid{k[i], shared})
		}
		require.ElementsMatch(t, sessionIDs, w.sim.InterestedSessions([]cid.Cid{shared}))
		for i, ses := range sessionIDs {
			require.Equal(t, []uint64{ses}, w.sim.InterestedSessions(k[i:i+1]))
			require.Equal(t, [][]cid.Cid{{k[i], shared}}, w.sim.FilterSessionInterested(ses, k))
		}
		last := len(sessionIDs) - 1
		for i, ses := range sessionIDs[:last] {
			require.Equal(t, k[i:i+1], w.removeSession(t, ses), "session %d", ses)
		}
		require.ElementsMatch(t, []cid.Cid{k[last], shared}, w.removeSession(t, sessionIDs[last]))
		for _, ch := range calls {
			requireReceived(t, ch, false)
		}
		if w.ps != nil {
			w.ps.Publish(peerA, other)
			for _, ch := range calls {
				requireReceived(t, ch, true, other)
			}
		}
		w.requireIdle(t)
	})
}

// PubSub calls take no session ID: native sessions and the
// SessionInterestManager's may use any ID, before and after calls start.
func TestPubSub_CallsTakeNoSessionID(t *testing.T) {
	ps, sim := New(nil)
	defer ps.Shutdown()
	b := newBlocks(t, 3)
	k := cidsOf(b...)
	var calls []<-chan blocks.Block
	for range 4 {
		calls = append(calls, ps.Subscribe(t.Context(), k[0]))
	}
	for i, ses := range sessionIDs {
		if i%2 == 0 {
			native, err := NotifierOf(ps).NewSubscription(ses)
			require.NoError(t, err, "session %d", ses)
			require.NoError(t, native.Subscribe(t.Context(), k[1]))
			defer native.Remove()
		} else {
			sim.RecordSessionInterest(ses, k[2:])
		}
	}
	for range 4 {
		calls = append(calls, ps.Subscribe(t.Context(), k[0]))
	}
	require.Equal(t, len(sessionIDs)+len(calls), NotifierOf(ps).Stats().Subscriptions)
	ps.Publish(peerA, b[0])
	for _, ch := range calls {
		requireReceived(t, ch, true, b[0])
	}
}

// A session of the SessionInterestManager and a native subscription with the
// same ID would be one subscription: a programming error, whatever the ID.
// The panic records nothing, and once the native session is removed the ID
// is free.
func TestSIM_SessionIDOfNativeSubscriptionPanics(t *testing.T) {
	eachSharedWiring(t, func(t *testing.T, w *wiring) {
		k := cidsOf(newBlocks(t, 2)...)
		for _, ses := range sessionIDs {
			native, err := NotifierOf(w.ps).NewSubscription(ses)
			require.NoError(t, err)
			require.NoError(t, native.Subscribe(t.Context(), k[1]))
			require.PanicsWithValue(t,
				fmt.Sprintf("bitswapcompat: session %d is subscribed to the Notifier outside the SessionInterestManager", ses),
				func() { w.sim.RecordSessionInterest(ses, k[:1]) })
			require.Empty(t, w.sim.InterestedSessions(k), "nothing recorded")
			require.Equal(t, [][]cid.Cid{nil}, w.sim.FilterSessionInterested(ses, k))
			require.Empty(t, w.removeSession(t, ses), "the native session is not the SessionInterestManager's")
			require.True(t, native.Wants(k[1]), "the native session is untouched")
			native.Remove()

			w.sim.RecordSessionInterest(ses, k[:1])
			require.Equal(t, []uint64{ses}, w.sim.InterestedSessions(k))
			require.Equal(t, k[:1], w.removeSession(t, ses))
		}
		w.requireIdle(t)
	})
}
