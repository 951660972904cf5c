package bitswapcompat

import (
	"slices"
	"testing"

	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"

	notifier "github.com/bitswapsync/notifier"
)

// A native session shares the Notifier with the compatibility layer: one
// PublishMessage reaches both, with HAVEs and DONT_HAVEs for the native one.
func TestMigration_NativeSessionBesideCompat(t *testing.T) {
	log := &cancelLog{}
	ps, sim := NewWithOptions(nil, WithCancelFunc(log.add))
	defer ps.Shutdown()
	b := newBlocks(t, 3)
	k := cidsOf(b...)
	native, err := NotifierOf(ps).NewSubscription(2)
	require.NoError(t, err)
	require.NoError(t, native.Subscribe(t.Context(), k[1:]...))
	ch := ps.Subscribe(t.Context(), k[:2]...)
	sim.RecordSessionInterest(1, k[:2])

	// The compat session lets go of k[1]: the native one and the call still
	// want it.
	require.Equal(t, []cid.Cid{}, sim.RemoveSessionWants(1, k[1:2]))
	require.Empty(t, log.since(0))

	msg := notifier.ResponseMessage{From: string(peerA), Blocks: b[:2], Haves: k[2:], DontHaves: k[:1]}
	require.NoError(t, PublishMessage(t.Context(), ps, msg))
	requireReceived(t, ch, true, b[:2]...)
	got := <-native.Messages()
	require.Equal(t, string(peerA), got.From)
	require.Equal(t, cidsOf(b[1]), cidsOf(got.Blocks...))
	require.Equal(t, k[2:], got.Haves)
	require.Empty(t, got.DontHaves)
	// The block ended the call's and the native session's wants of k[1]; the
	// compat session is still interested in k[0], as boxo's is.
	require.Equal(t, k[1:2], log.since(0))

	require.Nil(t, sim.RemoveSession(1))
	require.Equal(t, k[:2], cidsSorted(log.since(0), k))
	native.Remove()
	require.Equal(t, k, cidsSorted(log.since(0), k))
	requireIdle(t, ps, sim)
	require.NoError(t, PublishMessage(t.Context(), ps, msg))
	ps.Shutdown()
	require.ErrorIs(t, PublishMessage(t.Context(), ps, msg), notifier.ErrClosed)
}

// cidsSorted returns got ordered as in order, which must hold each of got.
func cidsSorted(got, order []cid.Cid) []cid.Cid {
	out := slices.Clone(got)
	slices.SortFunc(out, func(a, b cid.Cid) int { return slices.Index(order, a) - slices.Index(order, b) })
	return out
}
