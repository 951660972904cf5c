package bitswapcompat

import (
	"context"

	notifier "github.com/bitswapsync/notifier"
)

// WithMetrics makes the Notifier that the PubSub creates register its
// metrics, as notifier.WithMetrics does, in the scope that ctx carries plus a
// "notifier" sub-scope. Pass the ctx that boxo's client.New receives: in kubo
// its scope is "ipfs.bitswap", so the metrics are named
// ipfs_bitswap_notifier_* in Prometheus (README.md lists them). It is
// WithNotifierOptions(notifier.WithMetrics(ctx)), and panics on a nil ctx.
//
// The Notifier that NewSessionInterestManager builds alone, which records
// only sessions' interests, has no metrics.
func WithMetrics(ctx context.Context) Option {
	return WithNotifierOptions(notifier.WithMetrics(ctx))
}
