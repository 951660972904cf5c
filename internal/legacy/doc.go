// Package legacy is a baseline to measure the notifier against. It must not be
// used in production: it keeps, on purpose, the races it reproduces.
//
// It rebuilds the two-layer design that boxo's bitswap client (v0.43.0, the
// version this module requires) uses to route what it receives:
//
//   - PubSub mirrors bitswap/client/internal/notifications: a
//     github.com/cskr/pubsub instance with one topic per CID key string, and
//     per Subscribe call one pubsub subscription on a chan any plus one
//     goroutine that type-asserts and forwards into a chan blocks.Block.
//   - SessionInterestManager mirrors
//     bitswap/client/internal/sessioninterestmanager: one sync.RWMutex over a
//     map from CID to the set of sessions that want it, including the
//     RemoveSession that scans every key under the write lock.
//   - Client and Session mirror the call order of bitswap/client/client.go
//     (receiveBlocksFrom), internal/sessionmanager (ReceiveFrom,
//     CancelSessionWants, RemoveSession), internal/session (ReceiveFrom, the
//     incoming queue and its run goroutine) and internal/getter
//     (AsyncGetBlocks, handleIncoming), with the blockstore check done before
//     subscribing as boxo's blockservice does.
//
// WithLayers puts other implementations of the two layers under the same
// Client, such as bitswapcompat's replacements, which have boxo's method sets
// too (Notifications, SessionInterests).
//
// The interest map and the pubsub are updated in separate steps, so the faults
// that the notifier fixes are all here: a block stored between a request's
// blockstore check and its Subscribe is never delivered to it (lost wakeup),
// cancels computed on one goroutine can be sent after a newer want made on
// another, and a slow session makes ReceiveMessage wait.
//
// Where this package departs from boxo, the comment at the departure says so
// and why; the departures keep the costs that are measured and remove only
// what a benchmark cannot drive (peers, timers, tracing, metrics).
package legacy
