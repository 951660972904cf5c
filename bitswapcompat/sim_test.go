package bitswapcompat

import (
	"testing"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// eachSIM runs f on a SessionInterestManager built alone and on one built by
// New; the queries must answer alike where no block is delivered.
func eachSIM(t *testing.T, f func(t *testing.T, sim *SessionInterestManager)) {
	t.Run("alone", func(t *testing.T) { f(t, NewSessionInterestManager()) })
	t.Run("New", func(t *testing.T) {
		ps, sim := New(newStore())
		defer ps.Shutdown()
		f(t, sim)
	})
}

// Empty answers are boxo v0.42.0's to the last nil: a fork may test an
// answer against nil, or marshal it, where nil and empty differ. boxo's
// RemoveSessionWants, InterestedSessions and SplitWantedUnwanted's first
// result are never nil; RemoveSession, each set of FilterSessionInterested
// and SplitWantedUnwanted's second result are nil when empty. (Both
// InterestedSessions and RemoveSessionWants returned nil, found by review.)
func TestSIM_EmptyAnswersAreBoxos(t *testing.T) {
	eachWiring(t, func(t *testing.T, w *wiring) {
		sim := w.sim
		b := newBlocks(t, 2)
		ks := cidsOf(b...)
		res := sim.FilterSessionInterested(1, ks, nil, ks[:1])
		require.Equal(t, [][]cid.Cid{nil, nil, nil}, res, "an unknown session")
		require.Equal(t, []uint64{}, sim.InterestedSessions(ks), "no session")
		require.Nil(t, sim.RemoveSession(1), "an unknown session")
		require.Equal(t, []cid.Cid{}, sim.RemoveSessionWants(1, ks), "an unknown session")
		require.Equal(t, [][]cid.Cid{{}, nil}, sim.FilterInterests(slicesCopy(ks)[:0], nil))
		wanted, unwanted := sim.SplitWantedUnwanted(b)
		require.Equal(t, []blocks.Block{}, wanted, "nothing wanted")
		require.Equal(t, b, unwanted)

		sim.RecordSessionInterest(1, ks)
		sim.RecordSessionInterest(2, ks[:1])
		require.Equal(t, []cid.Cid{}, sim.RemoveSessionWants(2, ks[1:]), "a key the session does not want")
		require.Equal(t, []cid.Cid{}, sim.RemoveSessionWants(1, ks[:1]), "a key another session wants")
		require.Equal(t, [][]cid.Cid{nil}, sim.FilterSessionInterested(1, ks[:1]), "a key the session let go of")
		wanted, unwanted = sim.SplitWantedUnwanted(b)
		require.Equal(t, b, wanted)
		require.Nil(t, unwanted, "everything wanted")
		require.Equal(t, []cid.Cid{ks[1]}, w.removeSession(t, 1))
		require.Nil(t, sim.RemoveSession(1), "a session removed")
		require.Equal(t, []uint64{}, sim.InterestedSessions(ks[1:]), "a key no session wants")
		if w.ps == nil {
			return
		}
		w.ps.Shutdown()
		require.Equal(t, []uint64{}, sim.InterestedSessions(ks), "after Shutdown")
		require.Equal(t, []cid.Cid{}, sim.RemoveSessionWants(2, ks), "after Shutdown")
		require.Nil(t, sim.RemoveSession(2), "after Shutdown")
	})
}

func slicesCopy(ks []cid.Cid) []cid.Cid { return append([]cid.Cid(nil), ks...) }

// FilterSessionInterested must really filter, per session, keeping order.
func TestSIM_FilterSessionInterestedFilters(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		k := cidsOf(newBlocks(t, 5)...)
		sim.RecordSessionInterest(1, []cid.Cid{k[0], k[1], k[2]})
		sim.RecordSessionInterest(2, []cid.Cid{k[2], k[3]})
		res := sim.FilterSessionInterested(1, []cid.Cid{k[4], k[2], k[0]}, []cid.Cid{k[3]}, k)
		require.Equal(t, [][]cid.Cid{{k[2], k[0]}, nil, {k[0], k[1], k[2]}}, res)
		res = sim.FilterSessionInterested(2, k)
		require.Equal(t, [][]cid.Cid{{k[2], k[3]}}, res)
	})
}

// FilterInterests must really filter, in place, one slice per input, in order.
func TestSIM_FilterInterestsFiltersInPlace(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		k := cidsOf(newBlocks(t, 6)...)
		sim.RecordSessionInterest(1, []cid.Cid{k[1], k[4]})
		sim.RecordSessionInterest(2, []cid.Cid{k[4], k[5]})
		blks := []cid.Cid{k[0], k[1], k[2]}
		haves := []cid.Cid{k[5], k[3], k[4]}
		dontHaves := []cid.Cid{k[3]}
		res := sim.FilterInterests(blks, haves, dontHaves)
		require.Equal(t, [][]cid.Cid{{k[1]}, {k[5], k[4]}, {}}, res)
		require.Equal(t, k[1], blks[0], "filtered in place")
		require.Equal(t, []cid.Cid{k[5], k[4], cid.Undef}, haves, "in place, tail zeroed")
		require.Same(t, &blks[0], &res[0][0])
	})
}

func TestSIM_InterestedSessionsEachOnce(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		k := cidsOf(newBlocks(t, 3)...)
		sim.RecordSessionInterest(1, k[:2])
		sim.RecordSessionInterest(2, k[1:])
		sim.RecordSessionInterest(3, k[2:])
		require.ElementsMatch(t, []uint64{1, 2}, sim.InterestedSessions(k[:1], k[1:2], k[:2]))
		require.ElementsMatch(t, []uint64{1, 2, 3}, sim.InterestedSessions(nil, k, k))
		require.Empty(t, sim.InterestedSessions(nil))
	})
}

// Each set that FilterSessionInterested returns is a new slice, as its doc
// and boxo's say: a caller that appends to one set does not overwrite the
// next, though all are read in one step into one array.
func TestSIM_FilteredSetsAreApart(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		k := cidsOf(newBlocks(t, 4)...)
		sim.RecordSessionInterest(1, k[:3])
		res := sim.FilterSessionInterested(1, k[:1], k[1:2], k[2:])
		want := [][]cid.Cid{{k[0]}, {k[1]}, {k[2]}}
		require.Equal(t, want, res)
		for i := range res {
			_ = append(res[i], k[3])
		}
		require.Equal(t, want, res, "after an append to each set")
	})
}

func TestSIM_RemoveSessionReturnsKeysNobodyWants(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		k := cidsOf(newBlocks(t, 3)...)
		sim.RecordSessionInterest(1, k[:2])
		sim.RecordSessionInterest(2, k[1:])
		require.ElementsMatch(t, k[:1], sim.RemoveSession(1))
		require.Equal(t, [][]cid.Cid{nil}, sim.FilterSessionInterested(1, k))
		require.Equal(t, [][]cid.Cid{k[1:]}, sim.FilterSessionInterested(2, k))
		require.Empty(t, sim.RemoveSession(1), "twice")
		require.ElementsMatch(t, k[1:], sim.RemoveSession(2))
		requireTableEmpty(t, sim)
	})
}

func TestSIM_RemoveSessionWantsReturnsKeysNobodyWants(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		k := cidsOf(newBlocks(t, 3)...)
		sim.RecordSessionInterest(1, k[:2])
		sim.RecordSessionInterest(2, k[1:])
		require.Equal(t, k[:1], sim.RemoveSessionWants(1, k[:1]))
		require.Equal(t, [][]cid.Cid{k[1:2]}, sim.FilterSessionInterested(1, k))
		require.Empty(t, sim.RemoveSessionWants(1, k), "session 2 still wants k[1]")
		require.Equal(t, [][]cid.Cid{nil}, sim.FilterSessionInterested(1, k))
		require.ElementsMatch(t, k[1:], sim.RemoveSessionWants(2, append(k, k...)))
		requireTableEmpty(t, sim)
	})
}

func TestSIM_SplitWantedUnwanted(t *testing.T) {
	eachSIM(t, func(t *testing.T, sim *SessionInterestManager) {
		b := newBlocks(t, 3)
		k := cidsOf(b...)
		wanted, unwanted := sim.SplitWantedUnwanted(b)
		require.Empty(t, wanted)
		require.Equal(t, b, unwanted)

		sim.RecordSessionInterest(1, k[:2])
		wanted, unwanted = sim.SplitWantedUnwanted(b)
		require.Equal(t, b[:2], wanted)
		require.Equal(t, b[2:], unwanted)

		sim.RecordSessionInterest(2, k[1:])
		sim.RemoveSessionWants(1, k[:1])
		wanted, unwanted = sim.SplitWantedUnwanted([]blocks.Block{b[2], b[0], b[1], b[0]})
		require.Equal(t, []blocks.Block{b[2], b[1]}, wanted, "order kept")
		require.Equal(t, []blocks.Block{b[0], b[0]}, unwanted)
	})
}

func TestSIM_SessionIDReusableAfterRemoveSession(t *testing.T) {
	ps, sim := New(nil)
	defer ps.Shutdown()
	k := cidsOf(newBlocks(t, 2)...)
	sim.RecordSessionInterest(1, k[:1])
	require.Equal(t, k[:1], sim.RemoveSession(1))
	sim.RecordSessionInterest(1, k[1:])
	require.Equal(t, [][]cid.Cid{k[1:]}, sim.FilterSessionInterested(1, k))
	require.Equal(t, 1, NotifierOf(ps).Stats().Subscriptions)
	require.Equal(t, k[1:], sim.RemoveSession(1))
	requireIdle(t, ps, sim)
}

// With New, SplitWantedUnwanted counts the PubSub calls: a request whose
// session has not recorded its interest yet still gets its block.
func TestSIM_SplitCountsWaitingCalls(t *testing.T) {
	ps, sim := New(nil)
	defer ps.Shutdown()
	b := newBlocks(t, 2)
	ch := ps.Subscribe(t.Context(), b[0].Cid())
	wanted, unwanted := sim.SplitWantedUnwanted(b)
	require.Equal(t, b[:1], wanted)
	require.Equal(t, b[1:], unwanted)
	require.Empty(t, sim.InterestedSessions(cidsOf(b...)), "a call is not a session")
	ps.Publish(peerA, wanted...)
	requireReceived(t, ch, true, b[0])
	requireIdle(t, ps, sim)
}

// Shutdown closes the shared Notifier, which ends every session: the
// SessionInterestManager then records nothing, answers as if no session were
// interested, and its removals return nil.
func TestSIM_AfterShutdown(t *testing.T) {
	ps, sim := New(nil)
	b := newBlocks(t, 2)
	k := cidsOf(b...)
	sim.RecordSessionInterest(1, k[:1])
	ps.Shutdown()
	sim.RecordSessionInterest(1, k[1:]) // records nothing
	sim.RecordSessionInterest(2, k)     // nor this
	require.Equal(t, [][]cid.Cid{nil}, sim.FilterSessionInterested(1, k))
	require.Equal(t, [][]cid.Cid{nil}, sim.FilterSessionInterested(2, k))
	require.Empty(t, sim.InterestedSessions(k))
	require.Equal(t, [][]cid.Cid{{}}, sim.FilterInterests(slicesCopy(k)))
	wanted, unwanted := sim.SplitWantedUnwanted(b)
	require.Empty(t, wanted)
	require.Equal(t, b, unwanted)
	require.Empty(t, sim.RemoveSessionWants(1, k))
	require.Nil(t, sim.RemoveSession(1))
	require.Nil(t, sim.RemoveSession(2))
	requireIdle(t, ps, sim)
}

// With WithCancelFunc, CANCELs come from the Notifier, inside the operation
// that ended the last want, and the Remove methods return nil. A session's
// interest outlives the delivery of its block, so the delivery sends no
// CANCEL.
func TestSIM_WithCancelFunc(t *testing.T) {
	log := &cancelLog{}
	ps, sim := NewWithOptions(nil, WithCancelFunc(log.add))
	defer ps.Shutdown()
	b := newBlocks(t, 3)
	k := cidsOf(b...)
	sim.RecordSessionInterest(1, k)
	sim.RecordSessionInterest(2, k[2:])
	require.Equal(t, []cid.Cid{}, sim.RemoveSessionWants(1, k[:1]))
	require.Equal(t, k[:1], log.since(0))
	ps.Publish(peerA, b[1])
	require.Equal(t, k[:1], log.since(0), "session 1 is still interested in k[1]")
	require.Nil(t, sim.RemoveSession(1))
	require.Equal(t, k[:2], log.since(0), "session 2 still wants k[2]")
	require.Nil(t, sim.RemoveSession(2))
	require.Equal(t, k, log.since(0))
	requireIdle(t, ps, sim)
}

func requireTableEmpty(t testing.TB, sim *SessionInterestManager) {
	t.Helper()
	require.Zero(t, sim.n.Stats().Keys, "keys")
}
