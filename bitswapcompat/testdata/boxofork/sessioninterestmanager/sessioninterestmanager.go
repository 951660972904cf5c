// This file is what MIGRATION.md section 1 ("The drop-in swap") tells a boxo
// fork to write in
// bitswap/client/internal/sessioninterestmanager/sessioninterestmanager.go.
// .ci/boxo-suite copies it over boxo's own file to run boxo's bitswap tests
// against the compatibility layer; it is not built as part of this module.
package sessioninterestmanager

import "github.com/bitswapsync/notifier/bitswapcompat"

type SessionInterestManager = bitswapcompat.SessionInterestManager

// New is used by tests that build a manager on its own.
func New() *SessionInterestManager { return bitswapcompat.NewSessionInterestManager() }
