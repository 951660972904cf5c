// Package notifier hands the blocks, HAVEs and DONT_HAVEs that a bitswap client
// receives to the sessions that want them, and records which session wants
// which CID, in one component whose operations are atomic.
//
// A bitswap client today keeps a pubsub that wakes waiting requests and a
// separate session-interest map, and updates them in separate steps: a block
// that arrives between a request's blockstore check and its subscription is
// never delivered, and a CANCEL can overtake a newer WANT. Here Subscribe
// records the want and checks the blockstore in one atomic step (a check
// that fails fails the call, or, with WithFailedCheckAsMiss, is a miss), Publish
// stores and delivers in one, and the keys that nobody wants any more are
// reported inside the operation that ended their last want, under the locks
// of those keys.
//
// Every operation takes effect at one instant between its call and its
// return; operations on keys in different shards run in parallel.
//
// # Kinds of subscriptions
//
// A Subscription wants the keys given to its Subscribe and receives what is
// published for them, filtered to them. Its constructor decides how it
// receives and how long a want lasts:
//
//   - [Notifier.NewSubscription]: a session that reads the channel
//     [Subscription.Messages]. A want ends when its block is delivered.
//     Messages wait in the channel ([WithBufferSize]), then in a backlog
//     bounded by [WithMaxPending].
//   - [Notifier.NewSubscriptionFunc]: a session whose messages go to a
//     function, which the delivering operation calls under its locks. Wants
//     end as above. Messages() yields nothing; it is closed when the
//     subscription ends.
//   - [Notifier.NewRequest]: NewSubscriptionFunc for one request rather than a
//     session. It has no session ID, so it never collides with a session;
//     it is what a PubSub-style Subscribe call needs.
//   - [Notifier.NewInterest]: the interest of a session, as boxo's
//     SessionInterestManager records it. It receives nothing and its
//     Subscribe does not check the blockstore; its wants outlive delivery and
//     end only by Unsubscribe, Release, Remove, ReleaseAll or Close. They
//     count as wants everywhere else (storage, the cancel function);
//     Interested and AppendInterested read them.
//
// A session ID is unique among live subscriptions and may be reused once
// Remove has returned.
//
// # Locks, and where the callbacks run
//
// The index is split into shards, each with its own lock; a key belongs to
// one shard. Lock order: shard locks in ascending index, then the lock of one
// Subscription, or of several in the order of their creation, then the
// Notifier's registry of subscriptions, a leaf. (Several subscriptions are
// first tried in any order without waiting, TryLock; if one is held, those
// taken are released and all are locked in order.) Every operation that
// changes the index runs the same skeleton (run.go): take the locks, plan,
// call the blockstore with the keys reserved and no lock held, commit, hand
// over, cancel function. The operations take:
//
//   - Publish: the shard locks of all the message's keys at once. To store
//     blocks, it reserves every key of the message (HAVEs and DONT_HAVEs
//     too, so that it takes effect at one instant), releases the shard
//     locks, calls the blockstore's PutMany holding no lock, and takes the
//     shard locks again. Then it takes the locks of the subscriptions it
//     delivers to (delivery functions run here), hands the channel
//     subscriptions their messages, releases the subscriptions and every
//     shard but those of the keys whose last want it ended, and runs the
//     cancel function under those shards.
//   - Subscribe: the shard locks of its keys at once. With a blockstore and
//     keys it does not want yet (and unless it is an interest subscription),
//     it reserves those keys and calls Get holding no lock, as Publish does
//     with PutMany. Then, under the shard locks again, its own lock, to record
//     the wants; if a key it wanted already, which it did not reserve, is no
//     longer wanted, it starts over instead, with nothing changed. A found block is delivered as in Publish; if others waited for
//     it, its key goes to the cancel function as in Publish. A Subscribe of
//     one key that nobody of its kind wants or reserves (a GetBlock; a
//     waiter's mark does not count) reserves
//     nothing: it notes the key's version under the shard lock, calls Get
//     holding no lock, and commits only if no operation has touched the key
//     meanwhile: a found block under its own lock alone (unless an interest
//     subscription wanted the key, or it has a delivery function), a want
//     under the shard lock and its own; else it starts over as above,
//     calling Get again (shard_read.go, peek).
//   - Unsubscribe, Release: the shard locks of their keys, then the
//     subscription's lock; the cancel function runs under the shards of the
//     keys it reports, once the subscription's lock is released.
//   - Remove, ReleaseAll: the shard locks of every key the subscription wants
//     (taken again, with more shards, if a concurrent Subscribe added one),
//     then its lock and the registry; it closes Messages() under them,
//     after stopping the subscription's drain goroutine, and waiting for it,
//     if that goroutine is handing a message to the channel (it takes no
//     lock to stop); the cancel function as for Unsubscribe; then, holding
//     nothing, it waits for the drain goroutine, if one still runs, to
//     return.
//     A Publish or Subscribe that pushes a subscription past WithMaxPending
//     ends it this way once it has released its own locks, but does not
//     wait: if another operation holds up one of the subscription's keys
//     (reserves it, or waits with it marked, being older), the end marks the
//     least key it found busy and is left pending with that operation, which
//     completes it when it is done (Subscription.closeSlow), or with the
//     operation that ends the subscription's want of such a key, or that
//     makes the mark of the waiter it is left with stop holding, or by that
//     waiter as it moves its mark to another key. Err,
//     Messages() and the wants change together, at the end.
//   - Close: the registry, to list the live subscriptions; ends each as
//     Remove does; takes and releases each shard lock in turn, so that
//     operations in progress finish; then waits for the operations still in
//     the blockstore, for the pending slow-consumer ends they complete, and
//     for the drain goroutines.
//   - Fetch: as a one-key Subscribe of a new request (NewRequest); when it
//     finds the block, only the shard lock of its key, once, before the Get.
//   - NewSubscription, NewSubscriptionFunc, NewInterest: the registry only.
//     NewRequest: no lock. A request enters the registry, under its own lock,
//     when it first records a want or first makes its done signal in
//     Messages(); one that never does is unknown to Close, which has nothing
//     to end for it, and is closed lazily: Err says ErrClosed once Close has
//     begun (NewRequest in notifier.go).
//   - Wanted, Interested, AppendInterested, Subscription.Wants: the one shard
//     lock of their key (Wants also the subscription's lock when many
//     subscriptions want the key). Subscription.AppendWanted, Err: the
//     subscription's lock only.
//   - Stats, ID: no lock. Messages: none, but a request's first call takes
//     its lock and the registry.
//
// With WithMetrics, an operation that may change the index or the
// subscriptions ends, holding no lock, by bringing its part of the gauges to
// Stats under a leaf lock of the metrics that it only tries (TryLock): if
// another operation holds it, that one does it for both (metrics.go). Log lines and
// span events are written holding no lock.
//
// An operation that finds keys it needs reserved by another, or marked by
// an older waiter, marks one of them, the least (Notifier.markBusy),
// releases its locks, waits for that key's holder to finish, and starts
// again; the waits of Publish and Subscribe end early with their ctx, which
// removes the mark. An operation that starts later and needs the marked key
// waits for the marking one, so a waiter is not overtaken on the key it
// waits for (TestIO_WaiterIsNotOvertaken). It holds up nobody on its other
// keys: if it finds another of them busy once it wakes, it moves its one
// mark there. So a later operation waits behind a waiter only for a key
// that the waiter itself waits for, and so for blockstore calls on that
// key alone (G11; TestIO_WaiterHoldsUpOnlyTheKeyItWaitsFor). The price:
// while a waiter waits for one key, later operations may take its others,
// and it may find one of them busy when it wakes and wait again; every
// such wait is for an operation on a key it names. A waiting close marks
// one key the same way (Subscription.markIfBusy); once the want of the key
// it marked ends while it waits (its block delivered, or the key
// unsubscribed), its mark holds nobody up (op.holds), since the close no
// longer needs the key, and the close and the operations asleep on it wake.
// So for a waiting Unsubscribe or Release; and, the other way round, for a
// waiting Subscribe, which marks only a key its subscription does not
// want: its mark holds nobody up once its subscription starts wanting that
// key (by an older Subscribe). The read calls do not wait: they
// see the wants as they were before the reserving operation, so they are linearizable with
// the Notifier's operations but not with a blockstore changed by others
// (a garbage collection) during that operation's call. Reservations keep out
// the writers that go through the Notifier, not the others: a Subscribe of
// several keys, which calls Get once per key, sees each key as it was at its
// own Get if a garbage collection changes the blockstore during the call. A
// Subscribe of one key that reserves nothing (see Subscribe above) is, to
// the operations of the Notifier, one critical section at its commit, with
// the blockstore as its Get saw it: the same terms.
//
// # Not one instant
//
// Two things that a concurrent observer can see happen in two steps
// (found by review; each is what the code does on purpose, and neither
// reorders what a subscription receives or breaks G5):
//
//   - Close refuses new operations (ErrClosed) first, then ends the
//     subscriptions one by one: until it returns, a read call may find some
//     of them live, and their wants wanted.
//   - The cancel function runs after the operation has released the
//     subscriptions' locks (so that it holds up nobody on other shards):
//     AppendWanted, which takes only the subscription's lock, can see a
//     want ended before the cancel function has reported its key. The read
//     calls that take the key's shard lock (Wants, Wanted, Interested) wait
//     for it, and so does every later Subscribe of the key (G5).
//
// So the cancel function runs on the goroutine of the operation that ended
// the last want of its keys, holding the shard locks of those keys and no
// subscription's lock; a delivery function runs on the goroutine of the
// operation that delivers, holding the shard locks of that operation's keys
// and the locks of every subscription it delivers to. Neither may call a
// method of the Notifier or its Subscriptions except Stats. No lock is held
// while sending on a channel that may block: a subscription whose channel is
// full gets a drain goroutine, which takes the subscription's lock only to
// take the next message.
//
// The blockstore is called outside every lock of the Notifier (G11). While
// it runs, its caller holds only the reservations of its keys (a
// Subscribe's, only those it reads), so a slow or stalled store delays only
// the operations that would change the wants of those keys, and Close.
package notifier
