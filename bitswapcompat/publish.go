package bitswapcompat

import (
	"context"
	"errors"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/peer"

	notifier "github.com/bitswapsync/notifier"
)

// This file holds the PubSub's Publish and the pacing of Publishes that hand
// no block (pace). It takes no lock: the end of the calls that a failed store
// leaves waiting (failWaiting) is in end.go, with the rest of the calls'
// ends; pubsub.go and end.go take every lock of the PubSub and its calls.

// Publish delivers blks, received from peer from (the zero ID for blocks
// added locally), to every call waiting for them, and with a blockstore
// stores them first: all local blocks, and the remote blocks that some call
// or session wants; unwanted remote blocks are dropped. Publish is safe for
// concurrent use and never waits for a subscriber; it blocks only for the
// blockstore, for operations on the same keys and for its pacing (below). A
// failed store delivers nothing, goes to WithErrorFunc, and ends the calls
// that wait for any of blks: those listed are ended before Publish returns,
// and one whose Subscribe is still under way as that Subscribe lists it,
// before it returns the channel; their channels close without it once each
// call has left the Notifier, on a goroutine of its own, so perhaps after
// Publish returns (see failWaiting).
// A panic of the cancel function there ends the program (see
// WithCancelFunc). After Shutdown it does nothing and returns at once, but
// for the check of blks below.
//
// Publish is paced (see pace): one from a peer that hands no block to any
// call, within 250 µs of one that did, waits for the rest of those 250 µs
// before it returns, so that the goroutines made runnable by the first run
// first. On an otherwise idle process Go's timers round that sleep up to
// about 1.1 ms. A local Publish (from the zero ID: boxo's NotifyNewBlocks,
// which the block service calls after every block it fetched and every block
// it adds) never waits.
//
// A nil block, on which boxo's Publish panics too, panics with a
// "bitswapcompat:" message, and so does a block with an undefined CID, which
// no peer can send. (A nil pointer of a concrete block type is not detected:
// its Cid method panics, with the runtime's message, as in boxo's Publish.)
func (ps *PubSub) Publish(from peer.ID, blks ...blocks.Block) {
	mustBeUsable("Publish", blks)
	if len(blks) == 0 {
		ps.reap() // as every call does: a call that a native operation completed is removed
		return
	}
	listed := ps.log.begun.Load()
	err := ps.publish(context.Background(), notifier.ResponseMessage{From: string(from), Blocks: blks})
	if errors.Is(err, notifier.ErrClosed) {
		return // shut down: nothing was handed, and nothing is left to pace for
	}
	if err != nil { // the store failed: nothing else is left (no ctx, blks checked)
		ps.failWaiting(blks, listed)
	}
	report(context.Background(), ps.onErr, err)
	ps.pace(from != "")
}

// publish publishes msg and then removes the calls it completed (reap), also
// when a function of the user (the cancel function, a block wrapper) panics
// in the Notifier's Publish: the calls it completed before the panic are
// complete all the same.
func (ps *PubSub) publish(ctx context.Context, msg notifier.ResponseMessage) error {
	defer ps.reap()
	return ps.n.Publish(ctx, msg)
}

// paceWindow is how long after a Publish that handed a block to a call a
// Publish that hands none is held (see pace): about the time boxo's session
// run loop takes, on boxo's own layer, to be scheduled and end the session's
// interest in a block it has received (a median of 283 µs from the first
// copy in boxo's FixedDelay 10Nodes-AllToAll-UnixfsFetchLarge, 350 µs at the
// 90th percentile).
const paceWindow = 250 * time.Microsecond

// pace ends every Publish; remote is whether its blocks came from a peer.
// After a Publish that handed a block to a call it starts a goroutine that
// does nothing but close a new paced channel, and records the time. After a
// remote one that handed none it waits until that goroutine has run and
// then, if the handing Publish was less than paceWindow ago, sleeps out the
// rest of the window. So a copy of a block that was just handed out is held,
// as boxo's Publish holds it, until the goroutines that the first copy made
// runnable have had their turn.
//
// A local Publish that hands nothing returns at once: it is no peer's copy.
// boxo's block service publishes every block it fetched a second time,
// through the exchange's NotifyNewBlocks, just after the network's Publish
// handed it to the request; held, a DAG walked through the block service
// slept a window per block (found by review, with
// TestPubSub_BlockServiceWalkIsNotPaced).
//
// boxo's client depends on that. It publishes every block that a session
// still wants, so every copy of a block that comes before the session's run
// loop has handled the first is published, and each such copy has already
// added its sender to the session's peers (Session.ReceiveFrom, just before
// Publish, passes it to the want sender and wakes the run loop). With boxo's
// PubSub the goroutine that reads the peers' messages parks in the Publish of
// each copy (cskr/pubsub takes each block over an unbuffered channel, and its
// goroutine has not run yet), the run loop runs, ends the session's
// interest, and later copies are filtered out: two peers. Without pacing, the
// reader, whose own short waits are resumed ahead of the run queue, goes
// through every copy first: with nine seeds answering the root of a fetch,
// up to nine peers, and 16-21 % more messages in boxo's FixedDelay
// 10Nodes-AllToAll-UnixfsFetch benchmark.
//
// Waiting for the pace goroutine alone was not enough: it proves only that
// one goroutine ran, and the goroutine that closes paced wakes the reader
// ahead of the run loop. In 10Nodes-AllToAll-UnixfsFetchLarge the run loop
// of a session first ran 150-450 µs after the first copy of the root (traces
// of the apart and store wirings), and in the meantime the reader let up to
// eight more copies through: three session peers on average instead of two,
// and 1.3-1.5x the messages. A yield (runtime.Gosched) instead of the sleep
// did not help. Waiting or yielding in every Publish after a delivering one
// fixes the first case too, but measurably slows fetches that receive a
// stream of new blocks (3Nodes-AllToAll-BigBatch); a Publish that hands a
// block never waits here. boxo's own Publish parks the reader for every
// block until its pubsub goroutine has been scheduled; holding only copies,
// for at most paceWindow, is a cost of the same order.
//
// A Publish that hands a block while the pace goroutine of an earlier one
// has not run yet starts none: it only moves the window. A copy then waits
// for that goroutine, which was made before the goroutines this Publish made
// runnable, and the sleep covers the rest. When blocks stream in faster than
// the goroutine is scheduled, as they do to one session that receives one
// block per message, this saves a goroutine per message: about half of the
// layer's extra time over boxo's at one session in W1 (1.38x → 1.22x boxo's
// time; BENCHMARKS.md, twenty-fifth series).
//
// The pacing is a scheduling aid, not a guarantee, and nothing depends on it
// for correctness: woke is shared, so with concurrent Publishes, or a
// Subscribe that found its block in the blockstore, a Publish may take
// another's delivery for its own and not wait, or wait for another's pace.
func (ps *PubSub) pace(remote bool) {
	if ps.woke.Swap(false) {
		ps.handed.Store(int64(time.Since(ps.epoch)))
		if p := ps.paced.Load(); p != nil && !isClosed(*p) {
			return // the last pace goroutine has not run yet: a copy waits for it, then for the window from now
		}
		done := make(chan struct{})
		ps.paced.Store(&done)
		if h := ps.pacer; h != nil {
			go func() { h(); close(done) }()
			return
		}
		go close(done)
		return
	}
	if !remote {
		return // a local block (NotifyNewBlocks, AddBlock): not a peer's copy
	}
	p := ps.paced.Load()
	if p == nil {
		return // no Publish has handed a block yet
	}
	<-*p
	rest := time.Duration(ps.handed.Load()) + paceWindow - time.Since(ps.epoch)
	if rest > 0 {
		time.Sleep(min(rest, paceWindow))
	}
}

// isClosed reports whether ch is closed; nothing is ever sent on it.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
