// This file is what MIGRATION.md section 1 ("The drop-in swap") tells a boxo
// fork to write in bitswap/client/internal/notifications/notifications.go.
// .ci/boxo-suite copies it over boxo's own file to run boxo's bitswap tests
// against the compatibility layer; it is not built as part of this module.
package notifications

import (
	"context"
	"time"

	"github.com/bitswapsync/notifier/bitswapcompat"
	"github.com/ipfs/boxo/bitswap/client/traceability"
	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PubSub is a simple interface for publishing blocks and being able to subscribe
// for cids. It's used internally by bitswap to decouple receiving blocks
// and actually providing them back to the GetBlocks caller.
type PubSub interface {
	Publish(from peer.ID, blocks ...blocks.Block)
	Subscribe(ctx context.Context, keys ...cid.Cid) <-chan blocks.Block
	Shutdown()
}

// New returns a PubSub on a Notifier of its own (notify only).
func New(traceBlock bool) PubSub { return bitswapcompat.NewPubSub(nil, Options(traceBlock)...) }

// Options returns the bitswapcompat options that reproduce today's tracing.
func Options(traceBlock bool) []bitswapcompat.Option {
	if !traceBlock {
		return nil
	}
	return []bitswapcompat.Option{bitswapcompat.WithBlockWrapper(
		func(b blocks.Block, from peer.ID, since time.Duration) blocks.Block {
			return traceability.Block{Block: b, From: from, Delay: since}
		})}
}
