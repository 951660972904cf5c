// Package bitswapcompat lets a fork of boxo's bitswap client swap two of its
// internal parts for the notifier: the notifications pubsub (PubSub) and the
// SessionInterestManager. Both keep the exact method sets that the client
// calls today, so the fork edits constructors, not call sites (MIGRATION.md at
// the repository root lists the edits).
//
// # One Notifier, two views
//
// New builds both on one notifier.Notifier, and the Notifier's index is the
// only one: this package keeps none of its own. Every PubSub.Subscribe call
// that waits is a request subscription of the Notifier (Notifier.NewRequest),
// whose want of a key ends when its block is delivered (a one-key call whose
// block is stored makes none: Notifier.Fetch returns the block); every session
// recorded with RecordSessionInterest is an interest subscription
// (Notifier.NewInterest), whose wants outlive delivery and end only by
// RemoveSessionWants or RemoveSession, as boxo's session interests do. The
// Notifier's atomic Publish and Subscribe decide what is stored and delivered
// for both; the queries (SplitWantedUnwanted, InterestedSessions,
// FilterInterests) read its index under its shard locks,
// FilterSessionInterested under the session subscription's own lock, and the
// removals return what the Notifier computed inside the operation that ended
// the last interest.
//
// NewPubSub and NewSessionInterestManager build each part alone, as a fork's
// existing constructors do. Alone, the SessionInterestManager records its
// sessions in a notify-only Notifier of its own, where nothing else wants
// anything; it then behaves as boxo's.
//
// # Session IDs
//
// Any uint64 is a session ID. Requests have no session ID at all, so they
// never collide with sessions. Sessions of the SessionInterestManager and
// native ones (see NotifierOf) share the Notifier's session IDs:
// RecordSessionInterest panics on an ID that a native session holds.
//
// # Delivery without goroutines
//
// A PubSub call is a notifier.Subscription whose messages go to a function
// (Notifier.NewRequest), run by the operation that delivers them. That
// function sends each block into the call's channel, which has one slot per
// key and gets each key's block at most once, so the send never blocks. The
// function closes the channel when the last key has arrived; context.AfterFunc
// closes it when ctx is done, a Publish whose store failed closes those of
// the calls waiting for its blocks, and Shutdown closes the channels still
// open. A mutex per call makes the first of these the only one. A waiting
// call therefore costs no goroutine; the only goroutines are the one
// AfterFunc starts when ctx is done, which ends the call and exits, the one
// a failed store starts per call it ends (which waits, if it must, for a
// blockstore call on another key of that call, then ends it and exits), and
// the one a Publish that delivered a block starts to pace later ones (see
// PubSub.pace), which only closes a channel and exits.
//
// The delivery function must not call into the Notifier, so a call completed
// there cannot remove its own subscription: it queues it, and the function
// that ran the delivery (Publish, Subscribe or PublishMessage) removes it
// before it returns. A call completed before its own Subscribe has returned
// (a block in the blockstore, the GetBlock of a client) is not queued: that
// Subscribe removes it, and such a call never takes the PubSub's lock. A call
// completed by an operation made directly on the Notifier (a Publish, or a
// native Subscribe that found a stored block) is removed by the next call of
// the PubSub, whatever it is given (Publish, Subscribe, PublishMessage or
// Shutdown); until then it holds no want and no goroutine, only its
// registration.
//
// # Ownership
//
// The PubSub owns the Notifier, also the one it shares in New: its Shutdown
// closes the Notifier (boxo's client calls it last, in Close), which ends
// every subscription, the sessions of the SessionInterestManager too: after
// that it records nothing, its queries answer as if no session were
// interested, and RemoveSession and RemoveSessionWants return no keys.
//
// # Lock order
//
// The Notifier's locks (held while it runs delivery functions and the cancel
// function), then call.mu, then PubSub.mu. None of these is held while
// calling the Notifier. SessionInterestManager.mu is held only across calls
// that take the Notifier's registry lock or a subscription's lock briefly
// and never wait for it (NewInterest, Subscription.Err).
package bitswapcompat
