package notifier

import (
	"context"

	cid "github.com/ipfs/go-cid"
)

// This file is the one skeleton that every operation that changes the index
// runs: Publish, Subscribe, Unsubscribe and Release, and the close of a
// subscription (Remove, ReleaseAll, a slow-consumer end, Close).
//
//  1. acquire: take the shard locks of the operation's keys at a moment when
//     none of them is reserved (a close also takes the subscription's lock);
//  2. plan, under those locks: decide what the operation will do, and whether
//     it needs the blockstore;
//  3. I/O, if planned: reserve the keys, release the locks, call the
//     blockstore, take the locks again (Notifier.unlocked);
//  4. commit, under the locks: record the decision in the index;
//  5. hand over: route the wanted keys to the subscriptions that want them,
//     lock the target subscriptions, end the wants that delivered blocks
//     satisfy, and deliver to the delivery functions; deliver to the
//     channels; release the subscriptions and the shards that the cancel
//     function does not need; call the cancel function under the kept
//     shards; release them; end the subscriptions found past WithMaxPending.
//
// An error in steps 2 to 4 releases the locks and returns with nothing
// changed. Each operation supplies only its steps 1, 2, 3 and 4; the hand-over
// is the same for all.

// steps is what one kind of operation supplies to run. A nil plan or commit
// does nothing; io runs only if plan set op.io.
type steps struct {
	acquire func(ctx context.Context, n *Notifier, o *op) error
	plan    func(n *Notifier, o *op) error
	io      func(ctx context.Context, n *Notifier, o *op) error
	commit  func(n *Notifier, o *op) error
}

// run runs o's operation through the skeleton. It returns holding no lock.
//
// Step 5 calls functions of the user, the delivery functions and the cancel
// function, and Subscribe's commit may call a delivery function too. If one
// panics, or exits the goroutine, run's deferred call finishes the step
// before the panic goes on (see unwind): every other target still gets its
// message, the cancel function gets the keys, and no lock stays held.
func (n *Notifier) run(ctx context.Context, o *op, st *steps) error {
	if err := st.acquire(ctx, n, o); err != nil {
		return err
	}
	defer func() {
		if o.step != stepNone { // a function of the user panicked or exited the goroutine
			n.unwind(o)
		}
	}()
	var err error
	if st.plan != nil {
		err = st.plan(n, o)
	}
	if err == nil && o.io {
		err = n.unlocked(ctx, o, st.io)
	}
	if err == nil && st.commit != nil {
		o.step = stepCommit
		err = st.commit(n, o)
	}
	if err != nil {
		o.step = stepNone
		n.unlock(o.locks)
		return err
	}
	n.finish(o)
	return nil
}

// step is how far an operation has got in the part of the skeleton that
// calls functions of the user; finish resumes from it.
type step uint8

const (
	stepNone     step = iota // nothing to finish: not there yet, failed, or done
	stepCommit               // in commit: Subscribe's may hand s its found blocks through s's function
	stepFuncs                // handing over to delivery functions: op.next is the next entry of op.order
	stepChannels             // handing over to channels, then releasing the subscriptions and the shards but keep
	stepCancel               // in the cancel function
	stepSlow                 // closing the slow consumers: op.next is the next of op.slow
)

// finish is step 5, from where o.step says o got: route, hand over to the
// delivery functions, hand over to the channels, release the subscriptions
// and the shards but keep, call the cancel function, release keep, end the
// slow consumers.
// o.step moves past each function of the user before it is called, so that
// a call of finish after that function panicked carries on after it.
func (n *Notifier) finish(o *op) {
	if o.step <= stepCommit {
		n.route(o)
		o.step, o.next = stepFuncs, 0
	}
	if o.step == stepFuncs {
		o.handFuncs()
		o.step = stepChannels
	}
	if o.step == stepChannels {
		n.handOver(o)
		o.step = stepCancel
		if len(o.cancels) > 0 && n.cfg.cancel != nil {
			n.cfg.cancel(append([]cid.Cid(nil), o.cancels...))
		}
	}
	if o.step == stepCancel {
		n.unlock(o.keep)
		o.step, o.next = stepSlow, 0
	}
	for o.next < len(o.slow) {
		s := o.slow[o.next]
		o.next++
		s.closeSlow()
	}
	o.step = stepNone
	n.handedOver(o) // observe.go hook: metrics, slow-consumer log
}

// unwind finishes o's step 5 after a function of the user panicked or
// exited the goroutine, run's deferred call; the panic then goes on to the
// operation's caller, unrecovered, with its own stack. Should another
// function panic in turn, unwind's own deferred call carries on after that
// one: each panic happens past the point where the previous one did, so this
// ends.
//
// The tempting alternative, recovering the panic, finishing and panicking
// again, would lose the stack of the first panic and could not handle
// runtime.Goexit, which a test's t.FailNow in a delivery function calls:
// Goexit cannot be recovered, but it runs deferred calls.
func (n *Notifier) unwind(o *op) {
	defer func() {
		if o.step != stepNone {
			n.unwind(o)
		}
	}()
	n.finish(o)
}

// acquireOpen is step 1 of the operations that a closed Notifier refuses.
func acquireOpen(ctx context.Context, n *Notifier, o *op) error {
	return n.lockFree(ctx, o, true)
}

// acquireAny is step 1 of the operations that run after Close as before.
func acquireAny(ctx context.Context, n *Notifier, o *op) error {
	return n.lockFree(ctx, o, false)
}

// route hands every hit to the subscriptions that want its key, locks the
// target subscriptions, and ends the wants that the hit blocks satisfy. The
// caller holds the locks of every hit's shard.
//
// The targets are locked before any want ends. Some readers see a want's end
// under the subscription's lock alone: AppendWanted, a close (closeIdle), and
// a one-key Subscribe that commits its hit under s.mu (commitHit). Ending the
// wants first would let such a reader see the operation as done while its
// message is not yet queued; a delivery that the reader's caller starts
// next (that hit, or a Publish of another key that takes s.mu while this
// operation waits for another target's lock) would then reach s first,
// against publish order (G6). Found by review, with
// TestRoute_WantEndsOnlyWithItsMessage.
func (n *Notifier) route(o *op) {
	if len(o.hits) == 0 {
		return
	}
	o.build()
	o.lockTargets()
	for i := range o.hits {
		h := &o.hits[i]
		if h.kind != kindBlock || h.e == nil {
			continue
		}
		// Every want in the index had its WANT sent: a Subscribe that finds
		// a block nobody else wants delivers it without indexing it.
		x := &n.shards[h.shard].idx
		x.wakeDelivered(h.key, h.e, o)
		if x.endDelivered(h.key, h.e) {
			o.cancels = append(o.cancels, h.key)
			o.keep.Add(int(h.shard))
		}
	}
}

// handOver hands the channel subscriptions their messages and releases the
// target subscriptions (handOut), then o's shard locks except those of the
// keys to cancel (keep); finish then calls the cancel function with
// o.cancels while the keep shards are still held (see WithCancelFunc), and
// releases them. Last, finish closes the subscriptions that o found past
// WithMaxPending: that needs the shards of all their keys, which o could not
// take in order.
//
// The order is forced. The targets must be locked before the first shard is
// released, or a later operation on that shard could reach a shared
// subscription first. The cancel function must run under the keep shards but
// not under the targets' locks, or an operation on an unrelated shard that
// delivers to one of them would wait for it. And every shard must stay
// locked until the channels have their messages, or an operation on one of
// its keys could be ordered after o, having seen o done or not seen o at
// all, and return before a message of o is queued: o would not take effect
// at one instant.
//
// The tempting shortcuts release shards before the hand-out, so that a
// Publish holds up nobody on them while it hands out. Releasing all but the
// keep shards fails when a delivered key is not cancelled (an interest
// subscription still holds it): a target's Wants of it returned false, or
// the interest's Unsubscribe reported it to the cancel function and
// returned, while the target's message was not in its channel yet; and a
// Subscribe's new want of another key was visible before the block it found
// for a key that others wanted was queued. Keeping the shards of the keys
// whose wants changed too still fails for the keys that only HAVEs,
// DONT_HAVEs and unwanted blocks name: a Subscribe of such a key slipped in,
// ordered after the Publish (it never got the Publish's HAVE), and returned
// while another target's HAVE was not queued. Found by two reviews, with
// TestHandOver_WantsWaitsForTheMessageOfAnUncancelledKey,
// TestHandOver_CancelWaitsForTheMessageOfAnUncancelledKey,
// TestHandOver_SubscribeWantWaitsForItsFoundBlock and
// TestHandOver_SubscribeWaitsForTheHaveOfAPublish.
func (n *Notifier) handOver(o *op) {
	o.handOut()
	n.unlockExcept(o.locks, o.keep)
}
