package bitswapcompat

import (
	"sync"
	"testing"

	notifier "github.com/bitswapsync/notifier"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// A native session shares the Notifier with the compatibility layer: one
// PublishMessage reaches both, with HAVEs and DONT_HAVEs for the native one.
func TestMigration_NativeSessionBesideCompat(t *testing.T) {
	var mu sync.Mutex
	var cancelled []cid.Cid
	ps, sim := NewWithOptions(nil, WithCancelFunc(func(keys []cid.Cid) {
		mu.Lock()
		cancelled = append(cancelled, keys...)
		mu.Unlock()
	}))
	defer ps.Shutdown()
	b := newBlocks(t, 3)
	k := cidsOf(b...)
	native, err := NotifierOf(ps).NewSubscription(2)
	require.NoError(t, err)
	require.NoError(t, native.Subscribe(t.Context(), k[1:]...))
	ch := ps.Subscribe(t.Context(), k[:2]...)
	sim.RecordSessionInterest(1, k[:2])

	// The compat session lets go of k[1]: the native one still wants it.
	require.Nil(t, sim.RemoveSessionWants(1, k[1:2]))
	require.Empty(t, cancelled)

	msg := notifier.ResponseMessage{From: string(peerA), Blocks: b[:2], Haves: k[2:], DontHaves: k[:1]}
	require.NoError(t, PublishMessage(t.Context(), ps, msg))
	requireReceived(t, ch, true, b[:2]...)
	got := <-native.Messages()
	require.Equal(t, string(peerA), got.From)
	require.Equal(t, cidsOf(b[1]), cidsOf(got.Blocks...))
	require.Equal(t, k[2:], got.Haves)
	require.Empty(t, got.DontHaves)
	require.ElementsMatch(t, k[:2], cancelled)

	require.Nil(t, sim.RemoveSession(1))
	native.Remove()
	require.ElementsMatch(t, k, cancelled)
	requireIdle(t, ps, sim)
	require.NoError(t, PublishMessage(t.Context(), ps, msg))
	ps.Shutdown()
	require.ErrorIs(t, PublishMessage(t.Context(), ps, msg), notifier.ErrClosed)
}
