package notifier

import (
	"fmt"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
)

// ResponseMessage is what a peer sent in one bitswap message, or what this
// node added locally. The Notifier hands every subscription the part of it
// that the subscription wants.
//
// A ResponseMessage received from Messages(), or by a delivery function
// (NewSubscriptionFunc), shares its slices with no other subscription: the
// receiver may keep and modify them. (The slices of the messages of one
// operation, a Publish or a Subscribe that delivers found blocks, may be
// cut from one array, with their capacity capped so that an append copies:
// all keys, and all blocks when every message that carries blocks carries
// all of them. So a message kept keeps reachable the keys of the others,
// never a block it does not carry.)
type ResponseMessage struct {
	From      string         // sending peer as string(peer.ID), its bytes, not its base58 text; "" means local (a block added by this node)
	Blocks    []blocks.Block // the blocks; each ends the wants for its key
	Haves     []cid.Cid      // keys the sender has
	DontHaves []cid.Cid      // keys the sender does not have
}

// kind says in which field of a ResponseMessage a key appeared.
type kind uint8

const (
	kindBlock kind = 1 << iota
	kindHave
	kindDontHave
)

// validate returns ErrNilBlock or ErrInvalidCid, wrapped with the position of
// the first offending entry, or nil.
func (m *ResponseMessage) validate() error {
	for i, b := range m.Blocks {
		if b == nil {
			return fmt.Errorf("notifier: Blocks[%d]: %w", i, ErrNilBlock)
		}
		if !b.Cid().Defined() {
			return fmt.Errorf("notifier: Blocks[%d]: %w", i, ErrInvalidCid)
		}
	}
	if err := validateKeys("Haves", m.Haves); err != nil {
		return err
	}
	return validateKeys("DontHaves", m.DontHaves)
}

func validateKeys(field string, keys []cid.Cid) error {
	for i, k := range keys {
		if !k.Defined() {
			return fmt.Errorf("notifier: %s[%d]: %w", field, i, ErrInvalidCid)
		}
	}
	return nil
}

func (m *ResponseMessage) empty() bool {
	return len(m.Blocks) == 0 && len(m.Haves) == 0 && len(m.DontHaves) == 0
}
