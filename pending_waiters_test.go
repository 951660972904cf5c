package notifier

import (
	"fmt"
	"testing"
	"testing/synctest"

	blocks "github.com/ipfs/go-block-format"
	cid "github.com/ipfs/go-cid"
	"github.com/stretchr/testify/require"
)

// The interleavings that FuzzNotifierModel leaves out to stay deterministic
// (stall_fuzz_test.go): (a) several operations woken by one release, (b) a
// subscription pushed past WithMaxPending, while an operation waits, when it
// wants the reserved key, and (c) a pending end begun by the release that
// wakes the waiter. Each test builds one of them with a stalled blockstore
// call and checks an outcome that holds whichever woken operation runs
// first; the racing ones repeat their scenario (raceRounds), for the woken
// goroutines run in parallel even in a synctest bubble, in an order that
// changes from round to round. FuzzWaitersWokenByOneRelease
// (waiters_fuzz_test.go) varies (a).

// raceRounds is how many times each scenario runs: a few milliseconds each.
const raceRounds = 25

// (a) One stalled PutMany of the blocks of A, B, C, D and E holds up five
// operations, each waiting for one of those keys and none for another's
// mark, so that its release wakes all five at once: a Subscribe of A, an
// Unsubscribe of B and a Subscribe of E by one subscription, a Remove of a
// subscription that wants C, and a Publish of HAVEs of D and of W (a key
// nobody reserves). Their effects do not depend on the order they run in,
// which this checks, with the Stats and the cancels, once all return.
func TestIO_WaitersWokenByOneReleaseAllGoOn(t *testing.T) {
	for range raceRounds {
		synctest.Test(t, func(t *testing.T) {
			r := newOneRelease(t)
			n, st, b, kA := r.n, r.st, r.b, r.kA
			release := st.stall(t, kA)
			published := make(chan error, 1)
			go func() { published <- n.Publish(ctx, ResponseMessage{Blocks: b}) }()
			require.Equal(t, kA, <-st.entered) // A, B, C, D reserved

			sleepers := r.goAsleepOnTheRelease(t)
			spinWaiting(t, n, 5)

			release()
			for _, w := range append([]chan error{published}, sleepers...) {
				require.NoError(t, <-w)
			}
			synctest.Wait()
			r.checkMessages(t)
			r.checkWantsAndCancels(t)
			r.removeTheRest(t)
		})
	}
}

// oneRelease is the scene of TestIO_WaitersWokenByOneReleaseAllGoOn, in a
// synctest bubble: on four shards, the blocks A to E (b), none stored, and
// the keys X, Y, Z and W of no block; s2 wants B and Y, s3 C and Z, s4 W,
// and s1 nothing yet.
type oneRelease struct {
	st                             *stallStore
	n                              *Notifier
	cancels                        *cancelLog
	b                              []blocks.Block
	kA, kB, kC, kD, kX, kY, kZ, kW cid.Cid
	s1, s2, s3, s4                 *Subscription
}

// newOneRelease sets up the subscriptions of the scene.
func newOneRelease(t *testing.T) *oneRelease {
	t.Helper()
	st := newStallStore()
	n, cancels := newWithCancels(t, st, WithShards(4))
	b := mkBlocks("one-release", 5)
	k := keysOf(mkBlocks("one-release-extra", 4)) // X, Y, Z, W
	kA, kB, kC, kD := b[0].Cid(), b[1].Cid(), b[2].Cid(), b[3].Cid()
	kX, kY, kZ, kW := k[0], k[1], k[2], k[3]
	s1 := mustSub(t, n, 1)
	s2 := mustSub(t, n, 2)
	require.NoError(t, s2.Subscribe(ctx, kB, kY))
	s3 := mustSub(t, n, 3)
	require.NoError(t, s3.Subscribe(ctx, kC, kZ))
	s4 := mustSub(t, n, 4)
	require.NoError(t, s4.Subscribe(ctx, kW))
	return &oneRelease{
		st: st, n: n, cancels: cancels, b: b,
		kA: kA, kB: kB, kC: kC, kD: kD, kX: kX, kY: kY, kZ: kZ, kW: kW,
		s1: s1, s2: s2, s3: s3, s4: s4,
	}
}

// goAsleepOnTheRelease starts the five operations that the stalled PutMany
// holds up, each asleep on one of its keys: a Subscribe of A (and X), an
// Unsubscribe of B (and Y), a Remove of s3 (which wants C), a Publish of
// HAVEs of D and W, and a Subscribe of E. The channels get their results,
// in that order.
func (r *oneRelease) goAsleepOnTheRelease(t *testing.T) []chan error {
	t.Helper()
	n, b, s1, s2, s3 := r.n, r.b, r.s1, r.s2, r.s3
	kA, kB, kD, kX, kY, kW := r.kA, r.kB, r.kD, r.kX, r.kY, r.kW
	w1 := goAsleep(t, "Subscribe(A, X)", func() error { return s1.Subscribe(ctx, kA, kX) })
	w2 := goAsleep(t, "Unsubscribe(B, Y)", func() error { s2.Unsubscribe(kB, kY); return nil })
	w3 := goAsleep(t, "Remove", func() error { s3.Remove(); return nil })
	w4 := goAsleep(t, "Publish of HAVEs of D and W", func() error {
		return n.Publish(ctx, ResponseMessage{From: "w4", Haves: []cid.Cid{kD, kW}})
	})
	w5 := goAsleep(t, "Subscribe(E)", func() error { return s2.Subscribe(ctx, b[4].Cid()) })
	return []chan error{w1, w2, w3, w4, w5}
}

// checkMessages checks, once all have returned, what each subscription got:
// the same whichever woken operation ran first.
func (r *oneRelease) checkMessages(t *testing.T) {
	t.Helper()
	b, s1, s2, s3, s4, kW := r.b, r.s1, r.s2, r.s3, r.s4, r.kW
	require.Equal(t, []blocks.Block{b[0]}, recv(t, s1).Blocks, "s1 finds A in the store")
	require.Equal(t, []blocks.Block{b[1]}, recv(t, s2).Blocks)
	require.Equal(t, []blocks.Block{b[4]}, recv(t, s2).Blocks, "s2 finds E in the store")
	require.Equal(t, []blocks.Block{b[2]}, recv(t, s3).Blocks, "the Publish goes first")
	_, open := <-s3.Messages()
	require.False(t, open)
	require.NoError(t, s3.Err())
	require.Equal(t, []cid.Cid{kW}, recv(t, s4).Haves)
	none(t, s1)
	none(t, s2)
	none(t, s4)
}

// checkWantsAndCancels checks, once all have returned, the wants left, the
// Stats and the keys reported to the cancel function.
func (r *oneRelease) checkWantsAndCancels(t *testing.T) {
	t.Helper()
	n, cancels, b, s1 := r.n, r.cancels, r.b, r.s1
	kA, kB, kC, kD, kX, kY, kZ := r.kA, r.kB, r.kC, r.kD, r.kX, r.kY, r.kZ
	require.True(t, s1.Wants(kX))
	require.False(t, s1.Wants(kA))
	for _, k := range []cid.Cid{kA, kB, kC, kD, b[4].Cid(), kY, kZ} {
		require.False(t, n.Wanted(k))
	}
	require.Equal(t, Stats{Subscriptions: 3, Keys: 2, Wants: 2}, n.Stats())
	require.Equal(t, sorted(kB, kC, kY, kZ), cancels.take())
}

// removeTheRest removes the subscriptions left and checks that their wants,
// X and W, reach the cancel function and that nothing is left.
func (r *oneRelease) removeTheRest(t *testing.T) {
	t.Helper()
	n, cancels := r.n, r.cancels
	r.s1.Remove()
	r.s2.Remove()
	r.s4.Remove()
	require.Equal(t, sorted(r.kX, r.kW), cancels.take())
	requireIndexEmpty(t, n)
	require.NoError(t, n.Close())
	require.Equal(t, Stats{}, n.Stats())
}

// pendingRig is a subscription slow that wants A and C, filled to its bound
// by HAVEs of C (fillBacklog), and a Publish of A whose PutMany stalls, A
// reserved: the setup of the tests of a pending end and a waiter.
type pendingRig struct {
	t         *testing.T
	st        *stallStore
	n         *Notifier
	cancels   *cancelLog
	slow      *Subscription
	bA        blocks.Block
	kA, kC    cid.Cid
	release   func()
	published chan error
	other     *Subscription // the waiter's, if not slow's
	kX        cid.Cid       // a key that other may want
}

// newPendingRig sets up slow, other (wanting A and X if wantsA), and the
// stalled Publish of A.
func newPendingRig(t *testing.T, tag string, wantsA bool) *pendingRig {
	t.Helper()
	r := &pendingRig{t: t, st: newStallStore()}
	r.n, r.cancels = newWithCancels(t, r.st, WithBufferSize(1), WithMaxPending(1))
	b := mkBlocks(tag, 3)
	r.bA, r.kA, r.kC, r.kX = b[0], b[0].Cid(), b[1].Cid(), b[2].Cid()
	r.slow = mustSub(t, r.n, 10)
	require.NoError(t, r.slow.Subscribe(ctx, r.kA, r.kC))
	fillBacklog(t, r.n, r.kC)
	r.other = mustSub(t, r.n, 2)
	if wantsA {
		require.NoError(t, r.other.Subscribe(ctx, r.kA, r.kX))
	}
	r.release, r.published = r.st.publishStalled(t, r.n, r.bA)
	return r
}

// checkSlowEnded checks that slow was ended as a slow consumer, having
// kept only what it held before the overflow.
func (r *pendingRig) checkSlowEnded() {
	t := r.t
	t.Helper()
	requireHeldBeforeOverflow(t, r.slow)
	require.ErrorIs(t, r.slow.Err(), ErrSlowConsumer)
	require.False(t, r.slow.Wants(r.kA))
	require.False(t, r.slow.Wants(r.kC))
}

// requireHeldBeforeOverflow reads the Messages() of s, ended as a slow
// consumer after fillBacklog, to the end: what its buffer held before the
// overflow ("0"), then maybe what its drain goroutine and backlog held, in
// order, and nothing sent after the overflow.
func requireHeldBeforeOverflow(t *testing.T, s *Subscription) {
	t.Helper()
	i := 0
	for m := range s.Messages() {
		require.Equal(t, fmt.Sprint(i), m.From, "what s held before the overflow, in order")
		i++
	}
	require.GreaterOrEqual(t, i, 1, "the buffer's message is kept")
}

// waiterOnA is an operation that waits for A's reservation, by the
// subscription other (wanting A and X at the start, if wantsA) or by slow;
// check checks what it did, once everything has returned.
type waiterOnA struct {
	name   string
	wantsA bool // other subscribes to A and X before
	run    func(r *pendingRig, other *Subscription, kX cid.Cid) error
	check  func(r *pendingRig, other *Subscription, kX cid.Cid) (cancelled []cid.Cid, st Stats)
}

// waitersOnA: in every case slow, and A's Publish, end slow's wants (A, C);
// other is left wanting what the line says.
var waitersOnA = []waiterOnA{
	{
		name: "Subscribe", // other wants X
		run:  func(r *pendingRig, o *Subscription, kX cid.Cid) error { return o.Subscribe(ctx, r.kA, kX) },
		check: func(r *pendingRig, o *Subscription, kX cid.Cid) ([]cid.Cid, Stats) {
			require.Equal(r.t, []blocks.Block{r.bA}, recv(r.t, o).Blocks, "other finds A in the store")
			require.True(r.t, o.Wants(kX))
			return []cid.Cid{r.kA, r.kC}, Stats{Subscriptions: 1, Keys: 1, Wants: 1}
		},
	},
	{
		name: "Publish", // of HAVEs of A and C: slow drops them, or is ended
		run: func(r *pendingRig, _ *Subscription, _ cid.Cid) error {
			return r.n.Publish(ctx, ResponseMessage{From: "w", Haves: []cid.Cid{r.kA, r.kC}})
		},
		check: func(r *pendingRig, o *Subscription, _ cid.Cid) ([]cid.Cid, Stats) {
			none(r.t, o)
			return []cid.Cid{r.kA, r.kC}, Stats{Subscriptions: 1}
		},
	},
	{
		name: "Remove", wantsA: true,
		run: func(_ *pendingRig, o *Subscription, _ cid.Cid) error { o.Remove(); return nil },
		check: func(r *pendingRig, o *Subscription, kX cid.Cid) ([]cid.Cid, Stats) {
			require.Equal(r.t, []blocks.Block{r.bA}, recv(r.t, o).Blocks, "the Publish goes first")
			_, open := <-o.Messages()
			require.False(r.t, open)
			require.NoError(r.t, o.Err())
			return []cid.Cid{r.kA, r.kC, kX}, Stats{}
		},
	},
	{
		name: "Unsubscribe", wantsA: true, // other wants X
		run: func(r *pendingRig, o *Subscription, _ cid.Cid) error { o.Unsubscribe(r.kA); return nil },
		check: func(r *pendingRig, o *Subscription, kX cid.Cid) ([]cid.Cid, Stats) {
			require.Equal(r.t, []blocks.Block{r.bA}, recv(r.t, o).Blocks, "the Publish goes first")
			require.True(r.t, o.Wants(kX))
			return []cid.Cid{r.kA, r.kC}, Stats{Subscriptions: 1, Keys: 1, Wants: 1}
		},
	},
	{
		name: "slow's Unsubscribe",
		run:  func(r *pendingRig, _ *Subscription, _ cid.Cid) error { r.slow.Unsubscribe(r.kA); return nil },
		check: func(r *pendingRig, o *Subscription, _ cid.Cid) ([]cid.Cid, Stats) {
			return []cid.Cid{r.kA, r.kC}, Stats{Subscriptions: 1}
		},
	},
	{
		name: "slow's Remove", // the end is ErrSlowConsumer all the same (markClosed)
		run:  func(r *pendingRig, _ *Subscription, _ cid.Cid) error { r.slow.Remove(); return nil },
		check: func(r *pendingRig, o *Subscription, _ cid.Cid) ([]cid.Cid, Stats) {
			return []cid.Cid{r.kA, r.kC}, Stats{Subscriptions: 1}
		},
	},
}

// finish releases A's PutMany, waits for every operation, checks the
// outcome, and closes the Notifier, which must leave nothing.
func (r *pendingRig) finish(w waiterOnA, other *Subscription, kX cid.Cid, waiting, overflow chan error) {
	t := r.t
	t.Helper()
	r.release()
	require.NoError(t, <-r.published)
	require.NoError(t, <-waiting)
	if overflow != nil {
		require.NoError(t, <-overflow)
	}
	synctest.Wait()
	r.checkSlowEnded()
	cancelled, want := w.check(r, other, kX)
	require.Equal(t, want, r.n.Stats())
	require.False(t, r.n.Wanted(r.kA))
	require.False(t, r.n.Wanted(r.kC))
	require.Equal(t, sorted(cancelled...), r.cancels.take())
	other.Remove()
	requireIndexEmpty(t, r.n)
	require.NoError(t, r.n.Close())
	require.Equal(t, Stats{}, r.n.Stats())
}

// startWaiter starts w and checks that it waits for A's reservation.
func (r *pendingRig) startWaiter(w waiterOnA) (other *Subscription, kX cid.Cid, waiting chan error) {
	r.t.Helper()
	waiting = goAsleep(r.t, w.name, func() error { return w.run(r, r.other, r.kX) })
	spinWaiting(r.t, r.n, 1)
	return r.other, r.kX, waiting
}

// (b) An operation waits for A's reservation when slow, which wants A, is
// pushed past WithMaxPending (by a HAVE of C): its end is left pending on
// the Publish that holds A (or on the waiter, if it marked A first), and the
// release of that Publish's PutMany both resumes the end and wakes the
// waiter, which then race.
func TestOverflow_PendingEndOnTheReservedKeyRacesTheWaiter(t *testing.T) {
	raceEachWaiter(t, "pending-races-waiter", func(t *testing.T, r *pendingRig, w waiterOnA) {
		other, kX, waiting := r.startWaiter(w)
		overflow := make(chan error, 1)
		go func() { overflow <- r.n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{r.kC}}) }()
		returnsNow(t, overflow, r.release, "the Publish that overflowed slow waited for A's stalled PutMany")
		require.NoError(t, r.slow.Err(), "setup: the end is pending on A's Publish")
		require.True(t, r.slow.Wants(r.kC), "setup: the end is pending on A's Publish")
		r.finish(w, other, kX, waiting, nil)
	})
}

// raceEachWaiter runs f, raceRounds times in a bubble of its own, on a
// pendingRig tagged tag, for each kind of waiter in waitersOnA.
func raceEachWaiter(t *testing.T, tag string, f func(t *testing.T, r *pendingRig, w waiterOnA)) {
	for _, w := range waitersOnA {
		t.Run(w.name, func(t *testing.T) {
			for range raceRounds {
				synctest.Test(t, func(t *testing.T) { f(t, newPendingRig(t, tag, w.wantsA), w) })
			}
		})
	}
}

// (c) The release of A's PutMany wakes an operation waiting for A, and its
// Publish of A pushes slow past WithMaxPending: the end it begins races the
// waiter it has just woken. With "marked C", the waiter also holds a mark
// on C, a key slow wants (it found C reserved by a Subscribe of u, since
// returned), so the end parks on it.
func TestOverflow_EndBegunByTheReleaseThatWakesTheWaiter(t *testing.T) {
	raceEachWaiter(t, "pending-begun-by-release", func(t *testing.T, r *pendingRig, w waiterOnA) {
		other, kX, waiting := r.startWaiter(w)
		r.finish(w, other, kX, waiting, nil)
	})
	t.Run("Publish marking C", func(t *testing.T) {
		for range raceRounds {
			synctest.Test(t, func(t *testing.T) {
				r := newPendingRig(t, "pending-begun-marked", false)
				kY := mkBlocks("pending-begun-marked-y", 1)[0].Cid()
				u, releaseY, subY := r.st.reserveByGet(t, r.n, 3, r.kC, kY) // C reserved
				waiting := goAsleep(t, "Publish of HAVEs of A and C", func() error {
					return r.n.Publish(ctx, ResponseMessage{From: "w", Haves: []cid.Cid{r.kA, r.kC}})
				})
				spinWaiting(t, r.n, 1)
				releaseY() // C free, marked by the waiter, which sleeps on A's Publish
				require.NoError(t, <-subY)
				synctest.Wait()
				spinWaiting(t, r.n, 1)

				r.release()
				require.NoError(t, <-r.published)
				require.NoError(t, <-waiting)
				synctest.Wait()
				r.checkSlowEnded()
				require.Equal(t, ResponseMessage{From: "w", Haves: []cid.Cid{r.kC}}, recv(t, u))
				none(t, u)
				require.True(t, u.Wants(r.kC))
				require.True(t, u.Wants(kY))
				require.Equal(t, Stats{Subscriptions: 2, Keys: 2, Wants: 2}, r.n.Stats(), "u and the rig's other")
				require.Equal(t, []cid.Cid{r.kA}, r.cancels.take(), "C is still wanted by u")
				u.Remove()
				r.other.Remove()
				require.Equal(t, sorted(r.kC, kY), r.cancels.take())
				requireIndexEmpty(t, r.n)
				require.NoError(t, r.n.Close())
			})
		}
	})
}

// resumeRounds is how many times TestOverflow_PendingEndResumedBySeveralReleasesAtOnce
// runs its scenario (about 1 ms each under -race): a double run of a pending
// end needs two resumers inside a window of a few instructions.
const resumeRounds = 3000

// A pending end parked on one of four stalled Publishes, of A, B, D and E,
// all of which slow wants, is resumed by all four as their PutManys return at
// once: each delivers its block, ending a want of slow that the end marked
// (op.letGo lists the end with it), and each resumes it as it is done
// (putOp). Only one may run it (resume's CompareAndSwap of the park
// generation); the others find it stale. Under -race, a second run shows as
// a race on the op, or a nil dereference; the test is a bounded stress test
// (resumeRounds) and catches such a bug in about half of its runs.
func TestOverflow_PendingEndResumedBySeveralReleasesAtOnce(t *testing.T) {
	for range resumeRounds {
		synctest.Test(t, func(t *testing.T) {
			st := newStallStore()
			n, cancels := newWithCancels(t, st, WithShards(8), WithBufferSize(1), WithMaxPending(1))
			b := mkBlocks("pending-two-releases", 5)
			keys := keysOf(b)
			kC := keys[4]
			slow := mustSub(t, n, 1)
			require.NoError(t, slow.Subscribe(ctx, keys...))
			fillBacklog(t, n, kC)
			var releases []func()
			var pubs []chan error
			for _, blk := range b[:4] {
				r, p := st.publishStalled(t, n, blk)
				releases, pubs = append(releases, r), append(pubs, p)
			}
			require.NoError(t, n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kC}}), "overflows slow")
			require.NoError(t, slow.Err(), "setup: the end is pending")

			for _, r := range releases {
				r()
			}
			for _, p := range pubs {
				require.NoError(t, <-p)
			}
			synctest.Wait()
			requireHeldBeforeOverflow(t, slow)
			require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
			require.Equal(t, sorted(keys...), cancels.take())
			requireIndexEmpty(t, n)
			require.NoError(t, n.Close())
		})
	}
}

// (b), with the order fixed: slow's own Remove, older, waits for A's
// reservation with A and C marked (it found C reserved by a Subscribe of
// u, since returned) when a HAVE of D pushes slow past WithMaxPending. The
// end is left pending behind the Remove's marks; A's release lets the
// Remove go on first, and the end, resumed, finds slow closed. slow reports
// ErrSlowConsumer all the same, not the nil of a Remove (markClosed): it
// was pushed past WithMaxPending before it was removed.
func TestOverflow_OlderRemoveOfASlowConsumerEndsItAsSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStallStore()
		n, cancels := newWithCancels(t, st, WithBufferSize(1), WithMaxPending(1))
		b := mkBlocks("older-remove", 4)
		kA, kC, kD, kY := b[0].Cid(), b[1].Cid(), b[2].Cid(), b[3].Cid()
		slow := mustSub(t, n, 1)
		require.NoError(t, slow.Subscribe(ctx, kA, kC, kD))
		fillBacklog(t, n, kD)
		releaseA, pubA := st.publishStalled(t, n, b[0])
		u, releaseY, subY := st.reserveByGet(t, n, 2, kC, kY) // C reserved
		removed := goAsleep(t, "slow's Remove", func() error { slow.Remove(); return nil })
		spinWaiting(t, n, 1)
		releaseY() // C free, marked by the Remove, which waits for A
		require.NoError(t, <-subY)
		synctest.Wait()
		spinWaiting(t, n, 1)

		overflow := make(chan error, 1)
		go func() { overflow <- n.Publish(ctx, ResponseMessage{From: "peer", Haves: []cid.Cid{kD}}) }()
		returnsNow(t, overflow, releaseA, "the Publish that overflowed slow waited for A's stalled PutMany")
		require.NoError(t, slow.Err(), "setup: the end is pending")
		require.True(t, slow.Wants(kD), "setup: the end is pending")

		releaseA()
		require.NoError(t, <-pubA)
		require.NoError(t, <-removed)
		synctest.Wait()
		requireHeldBeforeOverflow(t, slow)
		require.ErrorIs(t, slow.Err(), ErrSlowConsumer)
		for _, k := range []cid.Cid{kA, kC, kD} {
			require.False(t, slow.Wants(k))
		}
		none(t, u)
		require.True(t, u.Wants(kC))
		require.True(t, u.Wants(kY))
		require.Equal(t, Stats{Subscriptions: 1, Keys: 2, Wants: 2}, n.Stats())
		require.Equal(t, sorted(kA, kD), cancels.take())
		u.Remove()
		require.Equal(t, sorted(kC, kY), cancels.take())
		requireIndexEmpty(t, n)
		require.NoError(t, n.Close())
	})
}
