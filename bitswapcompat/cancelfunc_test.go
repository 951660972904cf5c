package bitswapcompat

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier"
)

// New takes notifier.Options, so a fork may give it notifier.WithCancelFunc
// rather than NewWithOptions(bs, WithCancelFunc(f)). Either way a key whose
// last interest ends goes to f alone: RemoveSession and RemoveSessionWants
// return nothing, or the fork would send a second CANCEL after the call, the
// one that can overtake a newer WANT. Found by review: they returned the
// keys too.
func TestNew_NotifierCancelFuncReportsEachKeyOnce(t *testing.T) {
	log := &cancelLog{}
	ps, sim := New(nil, notifier.WithCancelFunc(log.add))
	defer ps.Shutdown()
	require.True(t, NotifierOf(ps).HasCancelFunc())
	ks := cidsOf(newBlocks(t, 2)...)
	sim.RecordSessionInterest(1, ks)

	require.Empty(t, sim.RemoveSessionWants(1, ks[:1]), "RemoveSessionWants")
	require.Empty(t, sim.RemoveSession(1), "RemoveSession")
	require.Equal(t, ks, log.since(0), "the cancel function")
}
