// Package bitswapcompat lets a fork of boxo's bitswap client swap two of its
// internal parts for the notifier: the notifications pubsub (PubSub) and the
// SessionInterestManager. Both keep the exact method sets that the client
// calls today, so the fork edits constructors, not call sites (MIGRATION.md at
// the repository root lists the edits).
//
// # One Notifier, two views
//
// New builds both on one notifier.Notifier. Every PubSub.Subscribe call and
// every session recorded with RecordSessionInterest is a subscription of that
// Notifier, so the Notifier's atomic Publish and Subscribe decide what is
// stored and delivered for both. The Notifier has no read API yet, so the
// SessionInterestManager answers its queries from an interest table
// (interest_table.go) that this package keeps in step with the Notifier: it is
// written before each subscription change this package makes, and by the
// Notifier's own delivery callbacks inside the critical section that ends a
// want. The table also counts the PubSub calls waiting for each key, which is
// how SplitWantedUnwanted sees a request that no session has recorded yet.
//
// NewPubSub and NewSessionInterestManager build each part alone, as a fork's
// existing constructors do. Alone, the SessionInterestManager has nobody to
// share wants with and keeps only its table; it then behaves as boxo's.
//
// # Session IDs
//
// Subscriptions of one Notifier need distinct IDs. PubSub calls take theirs
// from [PubSubIDBase, 2^64), in order; sessions, of the SessionInterestManager
// or native ones (see NotifierOf), must use IDs below PubSubIDBase.
// RecordSessionInterest panics on an ID in the reserved range. boxo numbers
// sessions from 1 upwards, so it never gets there.
//
// # Delivery without goroutines
//
// A PubSub call is a notifier.Subscription whose messages go to a function
// (Notifier.NewSubscriptionFunc), run by the operation that delivers them. That
// function sends each block into the call's channel, which has one slot per
// key and gets each key's block at most once, so the send never blocks. The
// function closes the channel when the last key has arrived; context.AfterFunc
// closes it when ctx is done, and Shutdown closes the channels still open. A
// mutex per call makes the first of the three the only one. A waiting call
// therefore costs no goroutine; the only goroutine is the one AfterFunc starts
// when ctx is done, which ends the call and exits.
//
// The delivery function must not call into the Notifier, so a call completed
// there cannot remove its own subscription: it queues it, and the function
// that ran the delivery (Publish, Subscribe, PublishMessage, or the
// SessionInterestManager's RecordSessionInterest) removes it before it
// returns. A call completed by a Publish made directly on the Notifier is
// removed by the next of those; until then it holds no want and no
// goroutine, only its registration.
//
// # Ownership
//
// The PubSub owns the Notifier, also the one it shares in New: its Shutdown
// closes the Notifier (boxo's client calls it last, in Close). After that the
// SessionInterestManager records no new interest; removals and queries still
// work on what it had recorded.
//
// # Lock order
//
// The Notifier's locks (held while it runs delivery functions and the cancel
// function), then call.mu, then tableShard.mu, then interestTable.dueMu;
// call.mu, then PubSub.mu. None of these is held while calling the Notifier.
// simSession.op is held across Notifier calls and is never taken by a
// callback; it is taken before SessionInterestManager.mu.
package bitswapcompat
