package bitswapcompat

import (
	"context"
	"strings"
	"testing"

	metrics "github.com/ipfs/go-metrics-interface"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/bitswapsync/notifier/internal/promtest"
)

// The scope of boxo's client ctx reaches the Notifier: the names come out as
// kubo shows them.
func TestMetrics_ClientScopeReachesTheNotifier(t *testing.T) {
	reg := promtest.Registry(t)
	scope := metrics.CtxSubScope(metrics.CtxScope(context.Background(), "ipfs"), "bitswap")
	ps, sim := NewWithOptions(newStore(), WithMetrics(scope))
	t.Cleanup(ps.Shutdown)
	blks := newBlocks(t, 2)
	sim.RecordSessionInterest(1, cidsOf(blks[0]))
	ch := ps.Subscribe(context.Background(), cidsOf(blks...)...)
	ps.Publish(peer.ID("peer"), blks...)
	requireReceived(t, ch, true, blks...)

	const want = `
# HELP ipfs_bitswap_notifier_blocks_delivered_total Blocks handed to subscriptions, once per subscription (those a slow consumer's end then drops included), and blocks that Fetch returned.
# TYPE ipfs_bitswap_notifier_blocks_delivered_total counter
ipfs_bitswap_notifier_blocks_delivered_total 2
# HELP ipfs_bitswap_notifier_blocks_stored_total Blocks stored in the blockstore by Publish.
# TYPE ipfs_bitswap_notifier_blocks_stored_total counter
ipfs_bitswap_notifier_blocks_stored_total 2
# HELP ipfs_bitswap_notifier_wants Wants: (subscription, key) pairs.
# TYPE ipfs_bitswap_notifier_wants gauge
ipfs_bitswap_notifier_wants 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"ipfs_bitswap_notifier_blocks_delivered_total", "ipfs_bitswap_notifier_blocks_stored_total",
		"ipfs_bitswap_notifier_wants"))
}
