// Package swapsim simulates a bitswap client under load and checks, at the
// end, the invariants of SPEC.md. It drives the notifier, today's two-layer
// design (internal/legacy) and bitswapcompat's replacement of those two layers
// through the same Impl interface, so that one driver runs them all.
// cmd/swapsim is its command line.
//
// # The implementations
//
// Config.Impl names one of four:
//
//   - "notifier": the Notifier as a fork's session uses it, one
//     Subscription per session, its messages read from Messages().
//   - "notifier-fetch": the Notifier as a fork's block service also uses it
//     for GetBlock: a session's Want of one key (a root, a node with one
//     child, each key of the fallback after a failed check) is a
//     Notifier.Fetch, one request per call, and a Want of several keys a
//     Subscribe of the session's subscription. Every message comes through a
//     delivery function (NewSubscriptionFunc, Fetch's newFunc), which runs
//     under the Notifier's locks and so only appends to the session's
//     unbounded mailbox; one goroutine per session feeds the session's
//     channel from it. A block that Fetch returns goes through the mailbox
//     too. Cancel removes the requests of its keys and unsubscribes the
//     others before it returns; Close removes every request and the
//     subscription; a request whose block has arrived is removed at the
//     session's next call. The Report counts Fetch's hits and requests.
//   - "legacy": today's two-layer client, driven in boxo's call order.
//   - "compat": legacy's client, in the same call order, with bitswapcompat's
//     PubSub and SessionInterestManager in place of legacy's reproductions
//     of boxo's (legacy.WithLayers): the swap of MIGRATION.md, both layers
//     on one Notifier that has the client's blockstore and reports CANCELs
//     (its step 3). A session's Close also waits for its GetBlocks calls,
//     which their context ends on goroutines of their own, to leave the
//     Notifier. One Want makes two wants of a key, the GetBlocks call's and
//     then the session's interest; a block that reaches the call before the
//     session records its interest ends the first with a CANCEL, and the
//     interest, recorded after, ends with another at Close. The checker
//     allows a Want of compat two CANCELs (compatImpl.WantEpochs); boxo's
//     own layers would send only the second.
//
// # The load
//
// Config.Sessions workers each fetch one DAG after another, each fetch (a
// request) in a new session that reuses the worker's session ID. A request
// wants the DAG's root; when a block arrives it decodes the block's links
// (block data encodes its children's CIDs, as a real DAG node does) and wants
// the children in one Want, like a bitswap session walking a DAG. A request
// fetches a fresh DAG, or by chance one that another request is fetching
// (shared wants), or one fetched whole before (every block already local).
//
// After Want returns, the client sends WANTs for the keys its blockstore did
// not hold when Want was called, as boxo does after its blockservice check:
// want-block to one peer that has the block (and, by chance, to a second),
// want-have to other peers. Config.Peers peers answer with the block, HAVE or
// DONT_HAVE after a latency drawn from [MinLatency, MaxLatency]; a peer drops
// an answer if a CANCEL of its key reached the wire after the WANT, as a peer
// that honours CANCEL does. Peers also push, by chance, blocks nobody asked
// for. Some blocks no peer has (LocalOnly): they arrive only by a local add.
// Local adds (Publish with From "") are scheduled around the time a key's
// children get subscribed, so they race those Subscribes. Some requests are
// cancelled midway, by Cancel then Close or by Close alone.
//
// Simulated latency uses real timers: one scheduler goroutine with a min-heap
// of due answers, one goroutine per peer that sends all of its due answers as
// one message, one for local adds. The goroutines of the simulator are
// therefore Sessions + Peers + 3, whatever the load.
//
// Every random choice of the load comes from Config.Seed (per worker, per
// DAG, per peer); the interleaving of goroutines does not, so two runs with
// one seed fetch the same kinds of DAGs, not the same sequence of events.
//
// # Faults
//
// With Config.Faults = P, a share P of the client's blockstore calls (Has,
// Get, PutMany; internal/faultbs draws them from Config.Seed, the method, the
// key and how many calls on that key came before) fail, writing nothing, or
// stall: they take Config.FaultStall longer, then run. Every implementation
// meets them. The world recovers as it would around a real client:
//
//   - A message whose blocks failed to store reached no session (the
//     notifier's Publish and legacy's ReceiveMessage deliver nothing then),
//     so its peer sends it again after a fresh latency, as a peer answers the
//     WANT that a client repeats for a block it still wants (boxo rebroadcasts
//     its wants); a failed local add is retried the same way. A CANCEL of a
//     key since its WANT still drops what is sent again.
//   - A Want that fails because the blockstore check failed (the notifier's
//     Subscribe, or Fetch, then adds no want and delivers nothing) is
//     repeated, key by key, 1ms apart, for up to Config.Stall: a client that
//     gets an error from its check tries again, and falls back to one block
//     at a time so that one failing key does not hold the others back (with
//     notifier-fetch, each of those is a Fetch). This assumes that a failed
//     Subscribe or Fetch delivered nothing, as the notifier documents; one
//     that did would show here as a DuplicateBlock.
//   - Legacy takes a failed check for a miss, as boxo's blockservice does,
//     and asks the peers: a block that only a local add provides then never
//     comes, and the request stalls. That is boxo's behaviour, not the
//     simulator's, and legacy's violations are reported, never fatal.
//   - Compat checks and stores as legacy does, and its Notifier checks and
//     stores again, inside bitswapcompat's Subscribe and Publish, which
//     cannot return an error. A failed check is a miss there too
//     (notifier.WithFailedCheckAsMiss), as in legacy. A failed store ends
//     the calls that wait for the message's blocks: their channels close
//     with keys missing, and the client, as boxo's getter does, then ends
//     the session's wants of those keys (a CANCEL). The request fails, as a
//     GetBlocks of boxo's block service whose PutMany fails ends short and
//     its caller gets an error: the driver counts it cut short
//     (Report.CutShort), not stalled, and no violation. The client tells
//     the driver (legacy.WithCutShortFunc) before its CANCELs, so the
//     checker sees the request's wants of those keys end first. A block
//     that only a local add provides, when the client's check and the
//     Notifier's both failed, is asked of peers that do not have it: with
//     legacy the request stalls, as in boxo. bitswapcompat checks such a
//     call's keys again later (PubSub.Subscribe) and publishes the block
//     it finds. In runs of 2 s at -faults 0.1, seeds 1-16: before that
//     re-check, 0-4 requests stalled a run (median 1, none in 7 runs; on
//     2026-12-07, 1-2 in 9 runs); with it, none stalled and no invariant
//     broke in seeds 1-40, nor in seeds 1-10 at -faults 0.05 (legacy,
//     seeds 1-6: 34-42 stalled). CI runs -faults 0.05 with every kind of
//     block.
//
// Every check below still holds for a client that keeps the contract; the
// checker learns of failed PutManys, Gets and Hases from the store the
// client gets, and asks the store under the faults whether a delivered block
// is stored. The Report counts the faults injected and the recovery.
//
// # The checks
//
// At the end, with every session closed and the network stopped:
//
//   - every request that was not cancelled got every block exactly once: a
//     request that receives nothing for Config.Stall is ended and each block
//     it still waited for is a LostBlock; one that ends for any reason
//     without every block is Incomplete; a second copy is a DuplicateBlock;
//     a block, HAVE or DONT_HAVE for a key it never asked for is an
//     UnexpectedKey; a block the blockstore does not hold yet is NotStored;
//   - nothing was stored that nobody asked for (Unsolicited): the blockstore
//     the client gets records every PutMany;
//   - the index is empty (IndexNotEmpty): Impl.Interest, after every session
//     is closed; and no goroutine is left once the client is closed;
//   - no Want returned nil though its own last blockstore check of a key
//     failed (ImplError): a failed check must fail the call (SPEC, Subscribe;
//     Fetch's doc; the notifier Impls do not set
//     notifier.WithFailedCheckAsMiss), else a block the store holds may be
//     waited for in vain. The driver gives each Want a context of its own,
//     and the blockstore the client gets records which of the Want's checks
//     failed; a client that does not pass that context to its blockstore
//     (legacy and compat, which take a failed check for a miss, as boxo
//     does) escapes the check;
//   - every want that ended with its key's last produced one CANCEL
//     (MissingCancel, ExtraCancel), and no CANCEL overtook a later WANT, nor
//     came after a Want that returned the block from the blockstore (a Fetch
//     hit, which took effect after every want of the key had ended)
//     (StaleCancel): the cancel function the client gets is the checker's.
//
// checker.go defines these precisely, says why each is sound for a client
// that keeps the contract, and why the simpler "WANTs and CANCELs alternate"
// rule is not.
//
// # What is measured
//
// Rates are per second of the load phase (Config.Duration): the drain after
// it, in which requests in flight finish or stall, is not counted, so that a
// client whose requests stall is not charged the Stall wait twice. Latency runs from the later of the moment the block was
// first handed to the client (Publish or ReceiveMessage) and the request's
// Want for it, to the moment the session reads it. Goroutines and the live
// heap are sampled every 100ms; the heap holds the client, and also the
// in-memory blockstore and the checker's per-key state, which grow with the
// blocks fetched. Every latency goes into a histogram of 16 buckets per power
// of two (Report.Latency), and the count of blocks delivered is sampled every
// 100ms (Report.Series): WriteJSON writes them with the table's figures,
// WritePlot draws them.
package swapsim
